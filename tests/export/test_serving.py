"""TF Serving contract of a classification export: warm-up requests, REST bodies, saved_model_cli,
and clear errors (never a crash) for bad input to every signature."""

import base64
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from cnn_apps.export import export_run, load_run_model
from cnn_apps.export.rest import rest_predict
from cnn_apps.export.signatures import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS
from cnn_apps.export.warmup import read_warmup_file, request_arrays

pytestmark = pytest.mark.tf_only


@pytest.fixture(scope="module")
def served(trained_run, tmp_path_factory):
    """(export folder, loaded SavedModel, keras model, info)."""
    import tensorflow as tf

    result, _ = trained_run
    path = export_run(result.run_dir, "saved_model", tmp_path_factory.mktemp("srv") / "digits")
    model, info = load_run_model(result.run_dir)
    return path, tf.saved_model.load(str(path)), model, info


def _png(image):
    return cv2.imencode(".png", np.ascontiguousarray(image[..., ::-1]))[1].tobytes()


def _images(info, count, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(count, *info["input_shape"]), dtype=np.uint8)


def _keras_probs(model, images):
    return model.predict(np.asarray(images, np.float32), verbose=0)["probabilities"]


# -- warm-up ------------------------------------------------------------------------------------
def test_warmup_file_has_one_request_per_signature_and_each_runs(served):
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path, loaded, model, _ = served
    raw = list(tf.data.TFRecordDataset(str(path / "assets.extra" /
                                           "tf_serving_warmup_requests")).as_numpy_iterator())
    logs = []
    for record in raw:                           # parse with the serving API protos directly
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(record)
        logs.append(log)
    assert len(logs) == len(read_warmup_file(path)) == 2
    by_signature = {log.predict_log.request.model_spec.signature_name: log for log in logs}
    assert set(by_signature) == {"serving_default", "predict_tensor"}
    assert {log.predict_log.request.model_spec.name for log in logs} == {"digits"}
    tensor_inputs = request_arrays(by_signature["predict_tensor"].predict_log.request)
    bytes_inputs = request_arrays(by_signature["serving_default"].predict_log.request)
    assert set(tensor_inputs) == {"images"} and set(bytes_inputs) == {"image_bytes"}
    for name, log in by_signature.items():
        arrays = request_arrays(log.predict_log.request)
        out = loaded.signatures[name](**{k: tf.constant(v) for k, v in arrays.items()})
        assert out["probabilities"].shape[0] == 2
    images = tensor_inputs["images"]
    out = loaded.signatures["predict_tensor"](images=tf.constant(images))
    np.testing.assert_allclose(out["probabilities"].numpy(), _keras_probs(model, images),
                               atol=1e-5)
    # The bytes request carries the same pixels, PNG-encoded after rounding to uint8.
    decoded = np.stack([cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
                        for b in bytes_inputs["image_bytes"]])
    np.testing.assert_array_equal(decoded, np.clip(np.round(images), 0, 255).astype(np.uint8))


# -- REST bodies ------------------------------------------------------------------------------
def test_rest_row_format_with_b64_bytes(served):
    _, loaded, model, info = served
    images = _images(info, 3)
    body = {"instances": [{"b64": base64.b64encode(_png(im)).decode()} for im in images]}
    status, response = rest_predict(loaded, body)
    assert status == 200
    predictions = response["predictions"]
    assert isinstance(predictions, list) and len(predictions) == 3
    expected = _keras_probs(model, images)
    k = info["top_k"]
    for row, probs in zip(predictions, expected):
        assert set(row) == {"probabilities", "classes", "scores", "class_names"}
        np.testing.assert_allclose(row["probabilities"], probs, atol=1e-5)
        assert len(row["classes"]) == k and row["classes"][0] == int(probs.argmax())
        assert row["class_names"][0] == info["class_names"][probs.argmax()]


def test_rest_columnar_format_and_named_row_format(served):
    _, loaded, model, info = served
    images = _images(info, 2, seed=1)
    expected = _keras_probs(model, images)
    status, response = rest_predict(loaded, {"signature_name": "predict_tensor",
                                             "inputs": images.astype(float).tolist()})
    assert status == 200 and set(response) == {"outputs"}
    outputs = response["outputs"]
    assert set(outputs) == {"probabilities", "classes", "scores", "class_names"}
    np.testing.assert_allclose(outputs["probabilities"], expected, atol=1e-5)
    assert np.asarray(outputs["classes"]).shape == (2, info["top_k"])
    status, named = rest_predict(loaded, {"signature_name": "predict_tensor", "instances": [
        {"images": im.astype(float).tolist()} for im in images]})
    assert status == 200
    np.testing.assert_allclose([r["probabilities"] for r in named["predictions"]], expected,
                               atol=1e-5)
    status, columnar_bytes = rest_predict(loaded, {"inputs": {"image_bytes": [
        {"b64": base64.b64encode(_png(im)).decode()} for im in images]}})
    assert status == 200
    np.testing.assert_allclose(columnar_bytes["outputs"]["probabilities"], expected, atol=1e-5)


@pytest.mark.parametrize("body, message", [
    ({"signature_name": "predict_tensor", "instances": [[[0.0] * 3] * 32]},
     "images must be float32 (N, H, W, C) with H=32, W=32, C=3; got shape (1, 32, 3)"),
    ({"signature_name": "predict_tensor", "instances": [{"b64": "AAAA"}]},
     "got base64 bytes"),
    ({"instances": [{"b64": "not base64!"}]}, "'b64' is not valid base64"),
    ({"instances": [], "inputs": []}, "exactly one of 'instances'"),
    ({"signature_name": "nope", "instances": []}, "signature_name 'nope' is not in the model"),
    ({"instances": [{"b64": base64.b64encode(b"GIF89a....").decode()}]},
     "image_bytes[0] is not a decodable JPEG/PNG image"),
])
def test_rest_bad_requests_get_400_with_clear_message(served, body, message):
    _, loaded, _, _ = served
    status, response = rest_predict(loaded, body)
    assert status == 400
    assert message in response["error"]


def test_rest_empty_batch_returns_empty_predictions(served):
    _, loaded, _, _ = served
    assert rest_predict(loaded, {"instances": []}) == (200, {"predictions": []})
    status, response = rest_predict(loaded, {"signature_name": "predict_tensor", "inputs": []})
    assert status == 200 and response["outputs"]["probabilities"] == []


# -- bad input through the loaded signatures ---------------------------------------------------
def _bytes_error(loaded, items):
    import tensorflow as tf

    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        loaded.signatures["serving_default"](image_bytes=tf.constant(items, dtype=tf.string))
    return info.value.message


def test_corrupt_and_truncated_image_bytes(served):
    _, loaded, _, info = served
    image = _images(info, 1)[0]
    png = _png(image)
    jpeg = cv2.imencode(".jpg", image)[1].tobytes()
    assert "image_bytes[1] is not a decodable JPEG/PNG image (no JPEG or PNG signature)" in \
        _bytes_error(loaded, [png, b"this is not an image at all"])
    assert "image_bytes[0] is not a decodable JPEG/PNG image (truncated" in \
        _bytes_error(loaded, [png[: len(png) // 2]])
    assert "image_bytes[2] is not a decodable JPEG/PNG image (truncated" in \
        _bytes_error(loaded, [png, jpeg, jpeg[: len(jpeg) - 40]])
    # Damage inside the compressed stream (header and end intact): the decoder's own error.
    damaged = png[:33] + bytes(len(png) - 45) + png[-12:]
    assert "PNG" in _bytes_error(loaded, [damaged])


def test_oversized_images_are_refused_before_decoding(served):
    _, loaded, _, _ = served
    side = int(np.sqrt(MAX_IMAGE_PIXELS)) + 1
    huge = cv2.imencode(".png", np.zeros((side, side), np.uint8))[1].tobytes()
    assert len(huge) < MAX_IMAGE_BYTES                 # refused for its pixels, not its bytes
    assert (f"image_bytes[0] is {side}x{side} pixels; at most {MAX_IMAGE_PIXELS} pixels"
            in _bytes_error(loaded, [huge]))
    too_long = b"\x89PNG\r\n\x1a\n" + bytes(MAX_IMAGE_BYTES)
    assert f"at most {MAX_IMAGE_BYTES} bytes are accepted" in _bytes_error(loaded, [too_long])


def test_wrong_rank_dtype_nan_and_empty_batch_on_tensor_signature(served):
    import tensorflow as tf

    _, loaded, model, info = served
    h, w, c = info["input_shape"]
    sig = loaded.signatures["predict_tensor"]
    expect = f"images must be float32 (N, H, W, C) with H={h}, W={w}, C={c}; got shape"
    for shape in [(h, w, c), (1, w, h * 2, c), (1, h, w, c, 1), ()]:
        with pytest.raises(tf.errors.InvalidArgumentError) as err:
            sig(images=tf.zeros(shape))
        assert expect in err.value.message or "is not compatible with expected shape" in \
            err.value.message, (shape, err.value.message)
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected to be a float tensor"):
        sig(images=tf.zeros((1, h, w, c), tf.int32))
    nan = np.zeros((2, h, w, c), np.float32)
    nan[1, 3, 3, 0] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="images contain NaN or Inf"):
        sig(images=tf.constant(nan))
    empty = sig(images=tf.zeros((0, h, w, c)))
    assert empty["probabilities"].shape == (0, len(info["class_names"]))
    assert empty["classes"].shape == (0, info["top_k"])
    # ... and a valid call afterwards still matches Keras (the process is alive and well).
    images = _images(info, 2, seed=3).astype(np.float32)
    np.testing.assert_allclose(sig(images=tf.constant(images))["probabilities"].numpy(),
                               _keras_probs(model, images), atol=1e-5)


def test_wrong_rank_and_empty_batch_on_bytes_signature(served):
    import tensorflow as tf

    _, loaded, _, info = served
    png = _png(_images(info, 1)[0])
    assert "image_bytes must be a 1-D string tensor (N,); got shape" in \
        _bytes_error(loaded, png)
    assert "image_bytes must be a 1-D string tensor (N,); got shape" in \
        _bytes_error(loaded, [[png, png]])
    assert "image_bytes" in _bytes_error(loaded, [[png], [png]])
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected to be a string tensor"):
        loaded.signatures["serving_default"](image_bytes=tf.zeros((1,)))
    empty = loaded.signatures["serving_default"](image_bytes=tf.constant([], tf.string))
    assert empty["probabilities"].shape == (0, len(info["class_names"]))


# -- saved_model_cli ---------------------------------------------------------------------------
def _saved_model_cli():
    cli = shutil.which("saved_model_cli")
    return [cli] if cli else [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]


def test_saved_model_cli_show_and_run(served, tmp_path):
    # TF 2.21's `run --input_exprs` accepts Python literals only (no np.zeros(...)), so the
    # batch goes in as a .npy file through --inputs.
    path, _, model, info = served
    h, w, c = info["input_shape"]
    show = subprocess.run(_saved_model_cli() + ["show", "--dir", str(path), "--all"],
                          capture_output=True, text=True, timeout=300)
    assert show.returncode == 0, show.stderr[-2000:]
    assert "signature_def['predict_tensor']" in show.stdout
    assert f"shape: (-1, {h}, {w}, {c})" in show.stdout
    batch = _images(info, 1, seed=4).astype(np.float32)
    batch_file = tmp_path / "batch.npy"
    np.save(batch_file, batch)
    run = subprocess.run(_saved_model_cli() + [
        "run", "--dir", str(path), "--tag_set", "serve", "--signature_def", "predict_tensor",
        "--inputs", f"images={batch_file}"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    text = run.stdout
    for name in ("probabilities", "classes", "scores", "class_names"):
        assert f"Result for output key {name}:" in text
    expected = _keras_probs(model, batch)[0]
    block = text.split("Result for output key probabilities:")[1].split("Result for")[0]
    printed = np.array([float(v) for v in block.replace("[", " ").replace("]", " ").split()])
    np.testing.assert_allclose(printed, expected, rtol=1e-4, atol=1e-6)
