"""TF Serving warm-up requests: ``assets.extra/tf_serving_warmup_requests``.

TF Serving replays this TFRecord of ``tensorflow.serving.PredictionLog`` records when it loads
a version, so the first real request does not pay for graph initialisation. One
``PredictRequest`` is written per signature of the SavedModel, with inputs taken by name from
the task's ``warmup_inputs(info)`` (``{signature input name: numpy batch}``); an input the task
did not name is matched by dtype and shape among the unused arrays, or, for a numeric input
with a fully known per-example shape, filled with zeros.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnn_apps.errors import CnnAppsError

WARMUP_FILE = "tf_serving_warmup_requests"


def signature_inputs(saved_model_dir) -> dict:
    """``{signature: {input name: (numpy dtype, shape with None for unknown)}}`` read from
    ``saved_model.pb`` (tag ``serve``) without loading the variables."""
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((Path(saved_model_dir) / "saved_model.pb").read_bytes())
    meta = next((m for m in proto.meta_graphs if "serve" in m.meta_info_def.tags), None)
    if meta is None:
        raise CnnAppsError(f"'{saved_model_dir}' has no meta graph tagged 'serve'")
    result = {}
    for name, sig in meta.signature_def.items():
        if name.startswith("__"):       # __saved_model_init_op is not a serving signature
            continue
        result[name] = {
            key: (tf.dtypes.as_dtype(t.dtype).as_numpy_dtype,
                  None if t.tensor_shape.unknown_rank
                  else [d.size if d.size >= 0 else None for d in t.tensor_shape.dim])
            for key, t in sig.inputs.items()}
    return result


def _fits(array, dtype, shape) -> bool:
    array = np.asarray(array)
    if np.dtype(dtype) == np.object_:
        ok_dtype = array.dtype.kind in "OSU"
    else:
        ok_dtype = array.dtype == np.dtype(dtype)
    if not ok_dtype or shape is None:
        return ok_dtype
    return array.ndim == len(shape) and all(s is None or s == d
                                            for s, d in zip(shape, array.shape))


def resolve_inputs(specs: dict, inputs: dict, batch_size: int = 2) -> dict:
    """Arrays for one signature: ``specs`` ``{name: (dtype, shape)}``; see the module doc."""
    chosen, unused = {}, dict(inputs)
    for name, (dtype, shape) in sorted(specs.items()):
        if name in inputs and _fits(inputs[name], dtype, shape):
            chosen[name] = inputs[name]
            unused.pop(name, None)
    for name, (dtype, shape) in sorted(specs.items()):
        if name in chosen:
            continue
        match = next((k for k, v in unused.items() if _fits(v, dtype, shape)), None)
        if match is not None:
            chosen[name] = unused.pop(match)
        elif (np.dtype(dtype) != np.object_ and shape is not None
              and all(d is not None for d in shape[1:])):
            chosen[name] = np.zeros((batch_size, *shape[1:]), dtype=dtype)
        else:
            raise CnnAppsError(f"no warm-up value for signature input '{name}' "
                               f"({np.dtype(dtype).name}, shape {shape}); the task's "
                               "warmup_inputs must provide it")
    return chosen


def warmup_requests(saved_model_dir, inputs: dict, model_name: str) -> list:
    """One ``PredictionLog`` (a ``PredictRequest``) per serving signature."""
    import tensorflow as tf
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    logs = []
    for signature, specs in sorted(signature_inputs(saved_model_dir).items()):
        request = predict_pb2.PredictRequest(
            model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature))
        for name, value in resolve_inputs(specs, inputs).items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        logs.append(prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)))
    return logs


def write_warmup_file(saved_model_dir, inputs: dict, model_name: str) -> Path:
    """Write ``assets.extra/tf_serving_warmup_requests`` into ``saved_model_dir``."""
    import tensorflow as tf

    path = Path(saved_model_dir) / "assets.extra" / WARMUP_FILE
    path.parent.mkdir(exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for log in warmup_requests(saved_model_dir, inputs, model_name):
            writer.write(log.SerializeToString())
    return path


def read_warmup_file(path) -> list:
    """The ``PredictionLog`` records of a warm-up file (a folder means its SavedModel's)."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path = Path(path)
    if path.is_dir():
        path = path / "assets.extra" / WARMUP_FILE
    logs = []
    for record in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(record)
        logs.append(log)
    return logs


def request_arrays(request) -> dict:
    """``{input name: numpy array}`` of a ``PredictRequest``."""
    import tensorflow as tf

    return {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}


def encode_png_batch(images) -> np.ndarray:
    """uint8-rounded PNG bytes (object array) of float/uint8 images (N, H, W, C) in 0..255."""
    import cv2

    encoded = []
    for image in np.asarray(images):
        pixels = np.clip(np.round(image), 0, 255).astype(np.uint8)
        if pixels.ndim == 3 and pixels.shape[-1] == 3:
            pixels = pixels[..., ::-1]                      # OpenCV writes BGR
        ok, data = cv2.imencode(".png", pixels)
        if not ok:
            raise CnnAppsError(f"could not PNG-encode an image of shape {image.shape}")
        encoded.append(data.tobytes())
    return np.array(encoded, dtype=object)
