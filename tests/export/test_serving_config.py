"""``cnn-apps serving-config`` (TF Serving models.config) and the generic warm-up resolution."""

import json

import numpy as np
import pytest

from cnn_apps.errors import CnnAppsError
from cnn_apps.export import export_saved_model
from cnn_apps.export.serving_config import serving_config_text, write_serving_config
from cnn_apps.export.warmup import read_warmup_file, request_arrays, resolve_inputs

pytestmark = pytest.mark.tf_only


def _tiny_endpoints():
    """A 2-input model (z float (N, 4), labels int32 (N,)) like a conditional generator, plus
    a string-input signature."""
    import keras
    import tensorflow as tf

    z = keras.Input((4,), name="z")
    model = keras.Model(z, keras.layers.Dense(3)(z))

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="z"),
                                  tf.TensorSpec([None], tf.int32, name="labels")])
    def generate(z, labels):
        return {"out": model(z) + tf.cast(labels, tf.float32)[:, None]}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def length(text):
        return {"length": tf.strings.length(text)}

    return model, generate, length


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    model, generate, length = _tiny_endpoints()
    root = tmp_path_factory.mktemp("exports")
    for name in ("alpha", "beta"):
        for _ in range(2):
            export_saved_model(model, root / name, {"serving_default": generate,
                                                    "length": length},
                               warmup_inputs={"labels": np.array([1, 2], np.int32),
                                              "example_0": np.array([b"ab", b"xyz"], object)})
    return root, model


def _parse(text):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())


def test_generic_warmup_matches_by_name_then_spec_then_zeros(exports):
    import tensorflow as tf

    root, model = exports
    logs = read_warmup_file(root / "alpha" / "1")
    requests = {log.predict_log.request.model_spec.signature_name: log.predict_log.request
                for log in logs}
    assert set(requests) == {"serving_default", "length"}
    gen = request_arrays(requests["serving_default"])
    np.testing.assert_array_equal(gen["labels"], [1, 2])            # by name
    np.testing.assert_array_equal(gen["z"], np.zeros((2, 4)))       # zeros from the spec
    assert list(request_arrays(requests["length"])["text"]) == [b"ab", b"xyz"]   # by dtype
    loaded = tf.saved_model.load(str(root / "alpha" / "1"))
    out = loaded.signatures["serving_default"](**{k: tf.constant(v) for k, v in gen.items()})
    expected = model.predict(gen["z"], verbose=0) + gen["labels"][:, None]
    np.testing.assert_allclose(out["out"].numpy(), expected, atol=1e-6)
    with pytest.raises(CnnAppsError, match="no warm-up value for signature input 'text'"):
        resolve_inputs({"text": (np.object_, [None])}, {})


def test_every_exported_signature_checks_shape_and_nan_at_run_time(exports):
    """A generic endpoint (not the classification one) gets the export's input guard: a wrong
    rank or per-example shape and NaN give clear errors instead of reaching the model."""
    import tensorflow as tf

    root, model = exports
    sig = tf.saved_model.load(str(root / "beta" / "2")).signatures["serving_default"]
    labels = tf.constant([0, 1])
    for z in (tf.zeros((2, 4, 1)), tf.zeros((2, 5)), tf.zeros((4,))):
        with pytest.raises(tf.errors.InvalidArgumentError) as err:
            sig(z=z, labels=labels)
        message = err.value.message
        assert "z must be float32 of shape (N, 4); got shape" in message or \
            "Shape of tensor z" in message, message
    with pytest.raises(tf.errors.InvalidArgumentError, match="labels must be a 1-D int32"):
        sig(z=tf.zeros((2, 4)), labels=tf.constant([[0, 1]]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="z contains NaN or Inf"):
        sig(z=tf.constant([[0.0, np.nan, 0.0, 0.0]] * 2), labels=labels)
    z = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_allclose(sig(z=tf.constant(z), labels=labels)["out"].numpy(),
                               model.predict(z, verbose=0) + np.array([[0.0], [1.0]]),
                               atol=1e-6)


def test_models_config_latest_policy(exports):
    root, _ = exports
    config = _parse(serving_config_text([root / "alpha", root / "beta"]))
    entries = config.model_config_list.config
    assert [e.name for e in entries] == ["alpha", "beta"]
    assert [e.base_path for e in entries] == [str((root / n).resolve()) for n in ("alpha", "beta")]
    assert all(e.model_platform == "tensorflow" for e in entries)
    assert all(e.model_version_policy.WhichOneof("policy_choice") == "latest" for e in entries)
    assert entries[0].model_version_policy.latest.num_versions == 1


def test_models_config_specific_and_all_policies(exports):
    root, _ = exports
    specific = _parse(serving_config_text([root / "alpha"], names=["digits"], policy="specific",
                                          versions=[2, 1]))
    entry = specific.model_config_list.config[0]
    assert entry.name == "digits" and list(entry.model_version_policy.specific.versions) == [1, 2]
    every = _parse(serving_config_text([root / "beta"], policy="all"))
    assert every.model_config_list.config[0].model_version_policy.HasField("all")


@pytest.mark.parametrize("kwargs, message", [
    ({"policy": "specific", "versions": [7]}, r"has no version\(s\) \[7\]"),
    ({"policy": "newest"}, "policy must be one of latest, all, specific"),
    ({"policy": "specific"}, "needs versions"),
    ({"num_versions": 0}, "num_versions must be >= 1"),
    ({"names": ["a", "b"]}, "2 names for 1 export folders"),
])
def test_models_config_bad_arguments(exports, kwargs, message):
    root, _ = exports
    with pytest.raises(CnnAppsError, match=message):
        serving_config_text([root / "alpha"], **kwargs)


def test_models_config_bad_folders(exports, tmp_path):
    root, _ = exports
    with pytest.raises(CnnAppsError, match="version folder: pass its parent"):
        serving_config_text([root / "alpha" / "1"])
    with pytest.raises(CnnAppsError, match="not an export base folder"):
        serving_config_text([tmp_path])
    (tmp_path / "alpha").mkdir()
    with pytest.raises(CnnAppsError, match="model names must be unique"):
        serving_config_text([root / "alpha", root / "alpha"])


def test_cli_serving_config(exports, tmp_path, capsys):
    from cnn_apps.cli import main

    root, _ = exports
    out = tmp_path / "models.config"
    assert main(["serving-config", str(root / "alpha"), str(root / "beta"), "--out", str(out),
                 "--policy", "latest", "--num-versions", "2"]) == 0
    assert json.loads(capsys.readouterr().out) == {"path": str(out), "models": 2}
    config = _parse(out.read_text())
    assert [e.model_version_policy.latest.num_versions
            for e in config.model_config_list.config] == [2, 2]
    assert main(["serving-config", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "not an export base folder" in capsys.readouterr().err
    assert write_serving_config([root / "beta"], out).read_text().count("config {") == 1
