"""One contract check for every custom layer (see issue: layer library).

``check_layer`` builds a small functional model around the layer and checks, against the
layer's own float32 inference output:
  * ``get_config`` / ``from_config`` round-trip gives identical outputs with copied weights;
  * ``.keras`` save/load gives identical outputs;
  * ``model.export()`` (TF backend: the SavedModel path is TensorFlow's) gives identical outputs;
  * gradients w.r.t. inputs and weights exist and are finite;
  * ``jit_compile=True`` prediction equals eager prediction;
  * a second batch size works (dynamic batch dimension);
  * under ``mixed_bfloat16`` the output is bfloat16 and every variable stays float32.
Numerical correctness against an independent reference is each test's own job.
"""

from __future__ import annotations

import os
import tempfile

import keras
import numpy as np

BACKEND = keras.backend.backend()


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _build_model(make_layer, input_shapes, dtypes=None, call_kwargs=None):
    dtypes = dtypes or ["float32"] * len(input_shapes)
    inputs = [keras.Input(shape=s[1:], dtype=d) for s, d in zip(input_shapes, dtypes)]
    layer = make_layer()
    x = inputs[0] if len(inputs) == 1 else inputs
    out = layer(x, **(call_kwargs or {}))
    return keras.Model(x, out), layer


def _to_numpy(y):
    return [keras.ops.convert_to_numpy(t).astype("float64") for t in _as_list(y)]


def _close(a, b, tol, what):
    for u, v in zip(_to_numpy(a), _to_numpy(b)):
        np.testing.assert_allclose(u, v, rtol=tol, atol=tol, err_msg=what)


def random_inputs(input_shapes, seed=0, low=-1.0, high=1.0, dtypes=None):
    rng = np.random.default_rng(seed)
    dtypes = dtypes or ["float32"] * len(input_shapes)
    out = []
    for s, d in zip(input_shapes, dtypes):
        if "int" in d:
            out.append(rng.integers(0, 4, size=s).astype(d))
        else:
            out.append(rng.uniform(low, high, size=s).astype(d))
    return out


def gradients_finite(model, inputs):
    """Gradient of sum(outputs) w.r.t. float inputs and trainable weights; all finite, some non-zero."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        xs = [tf.convert_to_tensor(x) for x in inputs]
        with tf.GradientTape() as tape:
            for x in xs:
                if x.dtype.is_floating:
                    tape.watch(x)
            y = model(xs if len(xs) > 1 else xs[0], training=True)
            loss = sum(tf.reduce_sum(tf.cast(t, "float32")) for t in _as_list(y))
        targets = [x for x in xs if x.dtype.is_floating] + list(model.trainable_variables)
        grads = tape.gradient(loss, targets)
        grads = [g for g in grads if g is not None]
        values = [np.asarray(tf.convert_to_tensor(g)) for g in grads]
    elif BACKEND == "jax":
        import jax
        import jax.numpy as jnp

        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]
        xs = [jnp.asarray(x) for x in inputs]
        float_idx = [i for i, x in enumerate(xs) if jnp.issubdtype(x.dtype, jnp.floating)]

        def loss_fn(tv, float_xs):
            feed = list(xs)
            for i, x in zip(float_idx, float_xs):
                feed[i] = x
            y, _ = model.stateless_call(tv, non_trainable, feed if len(feed) > 1 else feed[0],
                                        training=True)
            return sum(jnp.sum(t.astype("float32")) for t in _as_list(y))

        # jax.grad refuses integer inputs (e.g. labels): differentiate the float ones only.
        g_w, g_x = jax.grad(loss_fn, argnums=(0, 1))(trainable, [xs[i] for i in float_idx])
        values = [np.asarray(g) for g in g_w] + [np.asarray(g) for g in g_x]
    else:  # pragma: no cover - other backends are not part of the suite
        raise RuntimeError(f"unsupported backend {BACKEND}")
    assert values, "no gradient reached any input or weight"
    for v in values:
        assert np.all(np.isfinite(v)), "non-finite gradient"
    assert any(np.any(v != 0) for v in values), "all gradients are zero"


def check_layer(make_layer, input_shapes, *, dtypes=None, tol=1e-5, second_batch=3,
                check_export=True, check_grads=True, check_bf16=True, check_jit=True,
                input_low=-1.0, input_high=1.0, call_kwargs=None):
    """Run the shared contract on ``make_layer()`` with inputs of ``input_shapes``.

    ``input_shapes`` is a list of full shapes (batch first). Returns the model's output on
    the random inputs, so a test can also compare it with its own reference.
    """
    input_shapes = [tuple(s) for s in input_shapes]
    model, layer = _build_model(make_layer, input_shapes, dtypes, call_kwargs)
    xs = random_inputs(input_shapes, low=input_low, high=input_high, dtypes=dtypes)
    feed = xs if len(xs) > 1 else xs[0]
    y = model(feed, training=False)
    for t in _to_numpy(y):
        assert np.all(np.isfinite(t)), "non-finite output"

    # get_config round-trip.
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config, "get_config does not round-trip"
    model2, _ = _build_model(lambda: type(layer).from_config(config), input_shapes, dtypes,
                             call_kwargs)
    model2.set_weights(model.get_weights())
    _close(model2(feed, training=False), y, tol, "from_config clone differs")

    with tempfile.TemporaryDirectory() as tmp:
        # .keras save / load.
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        loaded = keras.saving.load_model(path)
        _close(loaded(feed, training=False), y, tol, ".keras reload differs")

        # SavedModel export (TF backend).
        if check_export and BACKEND == "tensorflow":
            import tensorflow as tf

            export_dir = os.path.join(tmp, "export")
            model.export(export_dir, format="tf_saved_model", verbose=False)
            reloaded = tf.saved_model.load(export_dir)
            _close(reloaded.serve(feed), y, tol, "SavedModel export differs")

    if check_grads:
        # The gradient pass runs in training mode, which moves BatchNormalization statistics;
        # restore them so the later comparisons still see the model that produced ``y``.
        frozen = [keras.ops.convert_to_numpy(v) for v in model.non_trainable_variables]
        gradients_finite(model, xs)
        for variable, value in zip(model.non_trainable_variables, frozen):
            variable.assign(value)

    if check_jit:
        model.compile(jit_compile=True)
        y_jit = model.predict(feed, verbose=0, batch_size=input_shapes[0][0])
        _close(y_jit, y, max(tol, 1e-4), "jit_compile output differs")

    if second_batch:
        shapes_b = [(second_batch,) + s[1:] for s in input_shapes]
        xb = random_inputs(shapes_b, seed=1, low=input_low, high=input_high, dtypes=dtypes)
        yb = model(xb if len(xb) > 1 else xb[0], training=False)
        assert _to_numpy(yb)[0].shape[0] == second_batch

    if check_bf16:
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy("mixed_bfloat16")
        try:
            model_bf, layer_bf = _build_model(make_layer, input_shapes, dtypes, call_kwargs)
            y_bf = model_bf(feed, training=False)
            float_outs = [t for t in _as_list(y_bf) if "float" in str(t.dtype)]
            assert all("bfloat16" in str(t.dtype) for t in float_outs), (
                f"mixed_bfloat16 output dtype {[t.dtype for t in float_outs]}")
            for v in layer_bf.weights:
                if "float" in str(v.dtype):
                    assert str(v.dtype) == "float32", f"variable {v.path} is {v.dtype}"
            for t in _to_numpy(y_bf):
                assert np.all(np.isfinite(t)), "non-finite bfloat16 output"
        finally:
            keras.config.set_dtype_policy(previous)
    return _to_numpy(y)
