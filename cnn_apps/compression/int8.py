"""int8 post-training quantization through TFLite, and a predict-compatible interpreter wrapper.

Full integer quantization (``TFLITE_BUILTINS_INT8``, activation ranges calibrated on a
representative dataset) is done by :func:`cnn_apps.export.export_tflite`; this module adds
:class:`TFLiteModel`, which runs the flatbuffer with ``model.predict``'s calling convention so
a task's ``evaluate`` measures the quantized model on its test split unchanged. Not in the
survey's seeds (SEED_CHECKLIST §12: "post-training int8 quantization" is external).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def quantize_int8(model, path, representative_data, num_calibration=200) -> Path:
    """Write ``model`` as a full-integer int8 TFLite file at ``path`` (float32 input/output
    edges; ``representative_data``: model inputs for calibration)."""
    from cnn_apps.export import export_tflite

    if representative_data is None or len(representative_data) == 0:
        raise ValueError("representative_data must hold model inputs for int8 calibration")
    return export_tflite(model, path, quantize="int8", representative_data=representative_data,
                         num_calibration=num_calibration)


class TFLiteModel:
    """A TFLite flatbuffer with ``predict(x, batch_size, verbose)`` returning
    ``{output name: array}`` like the Keras model it came from.

    Args:
        path: the ``.tflite`` file.
        output_names: the Keras model's output names, in its output order; the interpreter's
            outputs are matched to them by their last dimension (then by order).

    Example:
        >>> lite = TFLiteModel("model_int8.tflite", ["probabilities"])
        >>> lite.predict(x_test)["probabilities"].shape
        (360, 10)
    """

    def __init__(self, path, output_names, output_dims=None):
        import tensorflow as tf

        self.path = Path(path)
        if not self.path.is_file():
            raise ValueError(f"path must be an existing .tflite file, got '{path}'")
        self.interpreter = tf.lite.Interpreter(model_path=str(self.path))
        self.output_names = list(output_names)
        self.output_dims = list(output_dims) if output_dims is not None else None
        self._batch = None

    def _run(self, batch):
        interp = self.interpreter
        inp = interp.get_input_details()[0]
        if self._batch != len(batch):
            interp.resize_tensor_input(inp["index"], (len(batch), *batch.shape[1:]))
            interp.allocate_tensors()
            self._batch = len(batch)
        interp.set_tensor(inp["index"], batch.astype(np.float32))
        interp.invoke()
        return [interp.get_tensor(d["index"]) for d in interp.get_output_details()]

    def predict(self, x, batch_size=32, verbose=0):
        x = np.asarray(x, dtype=np.float32)
        chunks = [self._run(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
        outputs = [np.concatenate([c[j] for c in chunks]) for j in range(len(chunks[0]))]
        result, free = {}, list(range(len(outputs)))
        for k, name in enumerate(self.output_names):
            dim = self.output_dims[k] if self.output_dims else None
            match = next((j for j in free if dim is not None and outputs[j].shape[-1] == dim),
                         free[0] if free else None)
            if match is None:
                break
            result[name] = outputs[match]
            free.remove(match)
        return result
