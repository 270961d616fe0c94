"""SavedModel (TF Serving layout + signatures), ONNX and TFLite exports of a trained run."""

import json
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from cnn_apps.export import export_run, export_saved_model, load_run_model

pytestmark = pytest.mark.tf_only


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory):
    result, _ = trained_run
    base = tmp_path_factory.mktemp("serving") / "digits"
    first = export_run(result.run_dir, "saved_model", base)
    second = export_run(result.run_dir, "saved_model", base)
    return result, base, first, second


def test_tf_serving_layout_with_increasing_versions(exported):
    _, base, first, second = exported
    assert first == base / "1" and second == base / "2"
    assert (first / "saved_model.pb").is_file() and (first / "variables").is_dir()
    assert sorted(p.name for p in base.iterdir()) == ["1", "2"]   # no temp folders left
    info = json.loads((first / "assets.extra" / "model_info.json").read_text())
    assert info["task"] == "classification"


def test_saved_model_cli_lists_both_signatures(exported):
    _, _, first, _ = exported
    cli = shutil.which("saved_model_cli")
    cmd = [cli] if cli else [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    out = subprocess.run(cmd + ["show", "--dir", str(first), "--all"], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    assert "signature_def['serving_default']" in text
    assert "signature_def['predict_tensor']" in text
    assert "image_bytes" in text and "DT_STRING" in text
    for name in ("probabilities", "classes", "scores"):
        assert f"outputs['{name}']" in text


def test_image_bytes_signature_matches_keras(exported):
    import tensorflow as tf

    result, _, first, _ = exported
    model, info = load_run_model(result.run_dir)
    loaded = tf.saved_model.load(str(first))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(3, *info["input_shape"]), dtype=np.uint8)
    encoded = [cv2.imencode(".png", img[..., ::-1])[1].tobytes() for img in images]
    out = loaded.signatures["serving_default"](image_bytes=tf.constant(encoded))
    expected = model.predict(images.astype("float32"), verbose=0)["probabilities"]
    np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(out["classes"].numpy()[:, 0], expected.argmax(1))
    np.testing.assert_allclose(out["scores"].numpy()[:, 0], expected.max(1), atol=1e-6)
    assert out["class_names"].numpy()[0, 0].decode() == info["class_names"][expected[0].argmax()]
    tensor_out = loaded.signatures["predict_tensor"](images=tf.constant(images, tf.float32))
    np.testing.assert_allclose(tensor_out["probabilities"].numpy(), expected, atol=1e-5)


def test_failed_export_leaves_nothing(trained_run, tmp_path):
    import tensorflow as tf

    result, _ = trained_run
    model, _ = load_run_model(result.run_dir)

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
    def broken(x):
        return {"y": model(x)}                      # wrong input rank: tracing fails

    base = tmp_path / "m"
    with pytest.raises(Exception):
        export_saved_model(model, base, {"serving_default": broken})
    assert list(base.iterdir()) == []


def test_existing_version_is_never_overwritten(exported):
    from cnn_apps.errors import CnnAppsError

    result, base, _, _ = exported
    model, info = load_run_model(result.run_dir)
    from cnn_apps.applications import get_task

    with pytest.raises(CnnAppsError, match="already exists"):
        export_saved_model(model, base, get_task("classification").serving_endpoints(model, info),
                           version=1)


def test_onnx_matches_keras(trained_run, tmp_path):
    import onnxruntime as ort

    result, _ = trained_run
    path = export_run(result.run_dir, "onnx", tmp_path)
    model, info = load_run_model(result.run_dir)
    x = np.random.default_rng(1).uniform(0, 255, (4, *info["input_shape"])).astype("float32")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x}
    onnx_out = session.run(None, feed)[0]
    keras_out = model.predict(x, verbose=0)["probabilities"]
    assert np.max(np.abs(onnx_out - keras_out)) <= 1e-4


def test_tflite_matches_keras(trained_run, tmp_path):
    import tensorflow as tf

    result, _ = trained_run
    path = export_run(result.run_dir, "tflite", tmp_path)
    model, info = load_run_model(result.run_dir)
    x = np.random.default_rng(2).uniform(0, 255, (1, *info["input_shape"])).astype("float32")
    interpreter = tf.lite.Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    keras_out = model.predict(x, verbose=0)["probabilities"]
    np.testing.assert_allclose(out, keras_out, atol=1e-4)
