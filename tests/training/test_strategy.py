"""Strategy selection, fail-fast cluster checks, the global-batch plan and mixed precision."""

import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from cnn_apps.errors import ConfigError
from cnn_apps.training.strategy import batch_plan, get_strategy, is_chief, worker_count


@pytest.fixture
def no_cluster(monkeypatch):
    for name in ("TF_CONFIG", "TPU_NAME"):
        monkeypatch.delenv(name, raising=False)


def test_tpu_without_a_resolver_fails_fast(no_cluster):
    with pytest.raises(ConfigError, match=r"strategy 'tpu' needs a TPU cluster resolver.*"
                                          r"'tpu'.*TPU_NAME"):
        get_strategy("tpu")


@pytest.mark.parametrize("tf_config, missing", [
    (None, "chief, worker, ps"),
    ({"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 0}},
     "chief, ps"),
    ({"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {"type": "chief", "index": 0}},
     "ps"),
])
def test_parameter_server_without_a_cluster_fails_fast(no_cluster, monkeypatch, tf_config,
                                                       missing):
    if tf_config is not None:
        monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
    with pytest.raises(ConfigError, match=rf"strategy 'parameter_server' needs a cluster.*"
                                          rf"\(missing: {missing}\)"):
        get_strategy("parameter_server")


def test_train_fails_before_building_anything(no_cluster, tmp_path):
    from tests.conftest import tiny_classification_config
    from cnn_apps.training import train

    for strategy in ("tpu", "parameter_server"):
        config = tiny_classification_config(f"ff_{strategy}", strategy=strategy)
        with pytest.raises(ConfigError, match=f"strategy '{strategy}'"):
            train("classification", config, runs_root=tmp_path, verbose=0, export=False)
    assert not any(tmp_path.iterdir())  # no run folder was written


def test_bad_names_are_config_errors():
    with pytest.raises(ConfigError, match="strategy 'gpus' is not one of auto, one_device, "
                                          "mirrored, multi_worker, tpu, parameter_server"):
        get_strategy("gpus")
    with pytest.raises(ConfigError, match="cluster_resolver 'yarn' is not one of tf_config, "
                                          "slurm, kubernetes"):
        get_strategy("multi_worker", cluster_resolver="yarn")


def test_local_strategies(no_cluster):
    one = get_strategy("one_device")
    assert isinstance(one, tf.distribute.OneDeviceStrategy)
    assert one.num_replicas_in_sync == 1 and is_chief(one) and worker_count(one) == 1
    auto = get_strategy("auto")  # no TPU configured, no GPU here: the default strategy
    assert auto.num_replicas_in_sync == 1
    mirrored = get_strategy("mirrored")
    assert mirrored.num_replicas_in_sync == len(tf.config.list_logical_devices("CPU"))


def test_batch_plan_splits_the_global_batch_and_scales_the_learning_rate():
    plan = batch_plan(256, 8, 0.1, "linear", 64)
    assert plan.per_replica_batch == 256 // 8 == 32
    assert math.isclose(plan.learning_rate, 0.1 * 256 / 64)  # Goyal et al.: lr x k
    kept = batch_plan(256, 8, 0.1, "none", 64)
    assert kept.learning_rate == 0.1 and kept.per_replica_batch == 32
    text = plan.describe()
    assert "global batch 256 = 32 per replica" in text and "learning rate 0.4" in text
    own = batch_plan(None, 2, 0.1)  # a task that makes its own batches (no batch_size)
    assert own.learning_rate == 0.1 and "batches set by the task" in own.describe()


@pytest.mark.parametrize("args, message", [
    ((30, 4, 0.1), r"batch_size 30 \(the global batch\) must be divisible by the number "
                   r"of replicas \(4\)"),
    ((0, 1, 0.1), "batch_size must be a positive integer"),
    ((32.0, 1, 0.1), "batch_size must be a positive integer"),
    ((32, 1, 0.1, "sqrt"), "lr_scaling must be one of none, linear, got 'sqrt'"),
    ((32, 1, 0.1, "linear", 0), "lr_base_batch must be a positive integer"),
    ((None, 2, 0.1, "linear", 32), "lr_scaling 'linear' needs a batch_size"),
])
def test_batch_plan_rejects_bad_values(args, message):
    with pytest.raises(ConfigError, match=message):
        batch_plan(*args)


def test_jit_compile_needs_deterministic_false_and_then_really_compiles(tmp_path):
    """Keras silently drops XLA while TF op determinism is on; train() refuses the pair
    instead, and with deterministic=false the train step really is XLA-compiled."""
    from tests.conftest import tiny_classification_config
    from cnn_apps.training import train

    with pytest.raises(ConfigError, match="jit_compile=true needs deterministic=false"):
        train("classification", tiny_classification_config("jit_det", jit_compile=True),
              runs_root=tmp_path, verbose=0, export=False)
    assert not any(tmp_path.iterdir())  # nothing written

    tf.config.experimental.enable_op_determinism()  # as an earlier run in this process would
    seen = {}

    class Inspect(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            seen["jit"] = self.model.jit_compile  # Keras resets it to False when unsupported

    config = tiny_classification_config(
        "jit", jit_compile=True, deterministic=False, epochs=1, backbone="lenet5",
        backbone_args={}, data={"image_size": [32, 32], "channels": 1, "test_fraction": 0.8})
    try:
        result = train("classification", config, runs_root=tmp_path, verbose=0, export=False,
                       extra_callbacks=[Inspect()])
    finally:
        tf.config.experimental.enable_op_determinism()
    assert seen["jit"] is True
    assert np.isfinite(np.loadtxt(result.run_dir / "history.csv", delimiter=",",
                                  skiprows=1)).all()


def test_mixed_bfloat16_trains_a_few_steps_on_cpu(tmp_path):
    """A few steps of the real training loop under ``mixed_bfloat16``: finite, decreasing
    loss, bfloat16 compute, float32 variables; and train() applies the linear LR rule."""
    from tests.conftest import tiny_classification_config
    from cnn_apps.training import train

    config = tiny_classification_config(
        "bf16", mixed_precision="bfloat16", strategy="one_device", backbone="lenet5",
        backbone_args={"activation": "relu", "pooling": "max"}, dropout=0.0, epochs=3,
        batch_size=60, optimizer="adam", learning_rate=0.003, lr_schedule="constant",
        lr_scaling="linear", lr_base_batch=30,
        data={"image_size": [32, 32], "channels": 1, "val_fraction": 0.05,
              "test_fraction": 0.85},
        augment={"shift": 0.0, "rotation": 0.0, "zoom": 0.0, "brightness": 0.0,
                 "contrast": 0.0})
    seen = {}

    class Inspect(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            seen["compute"] = self.model.get_layer("backbone").get_layer("c1").compute_dtype
            seen["variables"] = {v.dtype for v in self.model.trainable_variables}

    try:
        result = train("classification", config, runs_root=tmp_path, verbose=0, export=False,
                       extra_callbacks=[Inspect()])
    finally:
        keras.config.set_dtype_policy("float32")
    history = np.loadtxt(result.run_dir / "history.csv", delimiter=",", skiprows=1)
    np.testing.assert_allclose(history[:, 1], 0.003 * 60 / 30, rtol=1e-6)  # learning_rate
    losses = history[:, 2]
    assert len(losses) == 3 and np.all(np.isfinite(losses))
    assert losses[-1] < losses[0]
    assert seen == {"compute": "bfloat16", "variables": {"float32"}}
