"""The custom ``strategy.run`` loop against Keras' own ``model.fit`` (in-process, default
strategy): same weights and logged loss on the same batches, callbacks, backup/restore and
mixed precision."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from cnn_apps.errors import ConfigError
from cnn_apps.training.callbacks import SharedBackupAndRestore
from cnn_apps.training.distributed import DistributedTrainer

FEATURES, CLASSES = 6, 3


def _data(count=22, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(count, FEATURES)).astype("float32")
    y = rng.integers(0, CLASSES, size=count).astype("int32")
    return x, y


def _dataset(batch=8):
    # 22 examples in batches of 8: the last batch is short (6); no shuffle, same order always.
    x, y = _data()
    return tf.data.Dataset.from_tensor_slices((x, {"probs": y})).batch(batch)


def _model(seed=3, regularize=True):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((FEATURES,), name="x")
    hidden = keras.layers.Dense(
        5, activation="tanh", name="hidden",
        kernel_regularizer=keras.regularizers.L2(0.01) if regularize else None)(inputs)
    probs = keras.layers.Dense(CLASSES, activation="softmax", name="probs",
                               dtype="float32")(hidden)
    model = keras.Model(inputs, {"probs": probs})
    model.compile(keras.optimizers.SGD(0.2, momentum=0.9),
                  loss={"probs": keras.losses.SparseCategoricalCrossentropy()},
                  metrics={"probs": [keras.metrics.SparseCategoricalAccuracy(name="acc")]})
    return model


def _trainer(model, jit_compile=False):
    return DistributedTrainer(model, tf.distribute.get_strategy(),
                              {"probs": keras.losses.SparseCategoricalCrossentropy()},
                              {"probs": [keras.metrics.SparseCategoricalAccuracy(name="acc")]},
                              jit_compile=jit_compile)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_loop_matches_keras_fit(jit_compile):
    reference = _model()
    expected = reference.fit(_dataset(), validation_data=_dataset(11), epochs=3, verbose=0,
                             shuffle=False).history
    model = _model()
    history = _trainer(model, jit_compile).fit(_dataset, _dataset(11), epochs=3).history
    for got, want in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    assert set(history) == set(expected)  # loss, acc, val_loss, val_acc: the fit names
    for key in expected:
        np.testing.assert_allclose(history[key], expected[key], rtol=1e-4, atol=1e-6)


def test_loop_loss_is_global_mean_plus_regularization():
    """Logged loss of one full-data step = mean cross-entropy (numpy) + L2 penalty."""
    model = _model()
    x, y = _data()
    probs = model.predict(x, verbose=0)["probs"].astype("float64")
    cross_entropy = -np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-7, 1.0)))
    penalty = 0.01 * float(np.sum(np.square(model.get_layer("hidden").kernel.numpy())))
    history = _trainer(model).fit(lambda: _dataset(len(y)), epochs=1).history
    np.testing.assert_allclose(history["loss"][0], cross_entropy + penalty, rtol=1e-5)


def test_callbacks_stop_training_and_learning_rate_changes():
    seen = []

    class StopAtSecondEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.model.optimizer.learning_rate.assign(0.1 / (epoch + 1))

        def on_epoch_end(self, epoch, logs=None):
            seen.append((epoch, float(self.model.optimizer.learning_rate.numpy())))
            self.model.stop_training = epoch == 1

    model = _model()
    history = _trainer(model).fit(_dataset, epochs=5, callbacks=[StopAtSecondEpoch()])
    assert seen == [(0, pytest.approx(0.1)), (1, pytest.approx(0.05))]
    assert len(history.history["loss"]) == 2


def test_terminate_on_nan_stops_the_loop():
    x, y = _data()
    x[9] = np.nan  # in the second batch

    def poisoned():
        return tf.data.Dataset.from_tensor_slices((x, {"probs": y})).batch(8)

    seen = []

    class Batches(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append((batch, logs["loss"]))

    history = _trainer(_model()).fit(poisoned, epochs=4,
                                     callbacks=[Batches(), keras.callbacks.TerminateOnNaN()])
    assert [batch for batch, _ in seen] == [0, 1]
    assert math.isfinite(seen[0][1]) and math.isnan(seen[1][1])
    assert len(history.history["loss"]) == 1


def test_backup_and_restore_resumes_to_the_uninterrupted_weights(tmp_path):
    reference = _model()
    reference.fit(_dataset(), epochs=4, verbose=0, shuffle=False)

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise RuntimeError("interrupted")

    backup = tmp_path / "backup"
    model = _model()
    with pytest.raises(RuntimeError, match="interrupted"):
        _trainer(model).fit(_dataset, epochs=4,
                            callbacks=[SharedBackupAndRestore(backup), Interrupt()])
    resumed = _model(seed=99)  # different initial weights: all state comes from the backup
    epochs_run = []

    class Record(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            epochs_run.append(epoch)

    _trainer(resumed).fit(_dataset, epochs=4, callbacks=[SharedBackupAndRestore(backup), Record()])
    assert epochs_run == [2, 3]
    for got, want in zip(resumed.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_shared_backup_restores_from_the_chief_folder(tmp_path):
    chief_dir, worker_dir = tmp_path / "chief", tmp_path / "worker"
    chief = _model()
    _trainer(chief).fit(_dataset, epochs=1, callbacks=[
        SharedBackupAndRestore(chief_dir, delete_checkpoint=False)])
    worker = _model(seed=7)
    callback = SharedBackupAndRestore(worker_dir, restore_dir=chief_dir,
                                      delete_checkpoint=False)
    callback.set_model(worker)
    callback.on_train_begin()
    for got, want in zip(worker.get_weights(), chief.get_weights()):
        np.testing.assert_array_equal(got, want)
    assert worker._initial_epoch == 1
    callback.on_epoch_end(1)
    assert (worker_dir / "latest.weights.h5").exists()


def test_custom_train_step_models_are_refused():
    class OwnStep(keras.Model):
        def train_step(self, data):
            return {}

    inputs = keras.Input((2,))
    model = OwnStep(inputs, keras.layers.Dense(1)(inputs))
    model.compile("sgd", "mse")
    with pytest.raises(ConfigError, match="custom train_step"):
        DistributedTrainer(model, tf.distribute.get_strategy(), "mse")


def test_float16_policy_uses_loss_scaling_and_trains():
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = _model(regularize=False)
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        assert model.get_layer("hidden").compute_dtype == "float16"
        history = _trainer(model).fit(_dataset, epochs=3).history
    finally:
        keras.config.set_dtype_policy("float32")
    assert all(math.isfinite(v) for v in history["loss"])
    assert history["loss"][-1] < history["loss"][0]
    assert all(v.dtype == "float32" for v in model.trainable_variables)
