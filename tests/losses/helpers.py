"""Backend-agnostic helpers for the loss tests (TF and JAX).

On JAX the loss is evaluated inside ``jax.jit``: one compiled program per call is much
cheaper than dispatching (and compiling) every op eagerly, and it also checks that each loss
traces under jit.
"""

from __future__ import annotations

import keras
import numpy as np

BACKEND = keras.backend.backend()


def _call(loss, y_true, y_pred, sample_weight):
    return loss(y_true, y_pred, sample_weight=sample_weight)


def _evaluate(loss, y_true, y_pred, sample_weight=None):
    if BACKEND == "jax":
        import jax

        return jax.jit(lambda t, p, w: _call(loss, t, p, w))(y_true, y_pred, sample_weight)
    return _call(loss, y_true, y_pred, sample_weight)


def loss_value_and_grad(loss, y_true, y_pred, sample_weight=None):
    """(float loss, d loss / d y_pred as numpy) with the backend's own autodiff."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        pred = tf.convert_to_tensor(y_pred)
        with tf.GradientTape() as tape:
            tape.watch(pred)
            value_ = _call(loss, y_true, pred, sample_weight)
        grad = tape.gradient(value_, pred)
        grad = np.zeros(pred.shape) if grad is None else np.asarray(grad)
        return float(value_), grad.astype("float64")
    if BACKEND == "jax":
        import jax
        import jax.numpy as jnp

        def fn(pred, t, w):
            return _call(loss, t, pred, w)

        value_, grad = jax.jit(jax.value_and_grad(fn))(jnp.asarray(y_pred), y_true,
                                                       sample_weight)
        return float(value_), np.asarray(grad, dtype="float64")
    raise RuntimeError(f"unsupported backend {BACKEND}")  # pragma: no cover


def value(loss, y_true, y_pred, sample_weight=None):
    out = _evaluate(loss, y_true, y_pred, sample_weight)
    return float(keras.ops.convert_to_numpy(keras.ops.cast(out, "float32")))


def per_sample(loss, y_true, y_pred):
    """The unreduced values ``call`` returns (through the public reduction=None path)."""
    config = loss.get_config()
    config["reduction"] = None
    unreduced = type(loss).from_config(config)
    return keras.ops.convert_to_numpy(_evaluate(unreduced, y_true, y_pred)).astype("float64")
