"""int8 TFLite parity on the digits test split, ONNX parity, and the Lambda-layer refusal."""

import json

import numpy as np
import pytest

from cnn_apps.errors import CnnAppsError
from cnn_apps.export import export_onnx, export_run, export_saved_model, export_tflite
from cnn_apps.export import load_run_model

pytestmark = pytest.mark.tf_only


def _tflite_predict(path, images):
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=str(path))
    inp = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(inp["index"], (len(images), *images.shape[1:]))
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], images.astype(np.float32))
    interpreter.invoke()
    outputs = [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]
    return next(o for o in outputs if o.shape[-1] == 10 and o.ndim == 2), interpreter


def test_int8_tflite_top1_agreement_on_digits_test_split(trained_run, tmp_path):
    from cnn_apps.applications import get_task

    result, config = trained_run
    path = export_run(result.run_dir, "tflite", tmp_path, int8=True)
    assert path.name == "model_int8.tflite"
    data = get_task("classification").data(config)
    model, _ = load_run_model(result.run_dir)
    keras_top1 = model.predict(data.x_test.astype(np.float32), verbose=0)["probabilities"]
    probs, interpreter = _tflite_predict(path, data.x_test)
    agreement = float(np.mean(probs.argmax(1) == keras_top1.argmax(1)))
    assert len(data.x_test) >= 300
    assert agreement >= 0.98, agreement
    # Full integer: every tensor of the compute graph is int8/int32 except the float
    # input/output edges (quantize/dequantize ops).
    kinds = {d["dtype"].__name__ for d in interpreter.get_tensor_details()}
    assert "int8" in kinds
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert "CONV_2D" in ops and "QUANTIZE" in ops and "DEQUANTIZE" in ops
    float_path = export_run(result.run_dir, "tflite", tmp_path)
    assert path.stat().st_size < 0.5 * float_path.stat().st_size


def test_int8_arguments_are_checked(trained_run, tmp_path):
    result, _ = trained_run
    model, _ = load_run_model(result.run_dir)
    with pytest.raises(CnnAppsError, match="quantize must be None or 'int8'"):
        export_tflite(model, tmp_path / "m.tflite", quantize="int4")
    with pytest.raises(CnnAppsError, match="needs representative_data"):
        export_tflite(model, tmp_path / "m.tflite", quantize="int8")
    with pytest.raises(CnnAppsError, match="int8 quantization is for the tflite format"):
        export_run(result.run_dir, "onnx", tmp_path, int8=True)
    assert not (tmp_path / "m.tflite").exists()


def test_cli_export_tflite_int8(trained_run, tmp_path, capsys):
    from cnn_apps.cli import main

    result, _ = trained_run
    assert main(["export", str(result.run_dir), "--format", "tflite", "--int8",
                 "--out", str(tmp_path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["path"].endswith("model_int8.tflite")
    assert (tmp_path / "model_int8.tflite").stat().st_size > 0


def test_onnx_float_parity_max_abs_diff(trained_run, tmp_path):
    import onnxruntime as ort

    from cnn_apps.applications import get_task

    result, config = trained_run
    path = export_run(result.run_dir, "onnx", tmp_path)
    model, _ = load_run_model(result.run_dir)
    x = get_task("classification").data(config).x_test[:64].astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    onnx_probs = session.run(None, {session.get_inputs()[0].name: x})[0]
    assert np.max(np.abs(onnx_probs - model.predict(x, verbose=0)["probabilities"])) <= 1e-4


def _lambda_model():
    import keras

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(2, 3, name="conv")(inputs)
    inner = keras.Sequential([keras.layers.Lambda(lambda t: t * 2.0, name="times_two")],
                             name="block")
    x = keras.layers.GlobalAveragePooling2D()(inner(x))
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))


def test_export_refuses_lambda_layers(tmp_path):
    import keras
    import tensorflow as tf

    model = _lambda_model()
    endpoint = tf.function(lambda x: {"y": model(x)},
                           input_signature=[tf.TensorSpec([None, 8, 8, 3], tf.float32)])
    for export in (lambda: export_saved_model(model, tmp_path / "sm", {"serving_default":
                                                                       endpoint}),
                   lambda: export_onnx(model, tmp_path / "m.onnx"),
                   lambda: export_tflite(model, tmp_path / "m.tflite")):
        with pytest.raises(CnnAppsError, match=r"Lambda layer\(s\) '.*block/times_two'"):
            export()
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "m.tflite").exists()
    assert not (tmp_path / "sm").exists() or not any((tmp_path / "sm").iterdir())
    # The reason: Keras itself refuses to load such a model in safe mode.
    model.save(tmp_path / "lambda.keras")
    with pytest.raises(ValueError, match="safe_mode"):
        keras.saving.load_model(tmp_path / "lambda.keras", safe_mode=True)
    (tmp_path / "model_info.json").write_text(json.dumps({"task": "classification"}))
    with pytest.raises(CnnAppsError, match="only loads with safe_mode=False"):
        load_run_model(tmp_path / "lambda.keras")
