"""Checks run before an export: only layers that load with Keras ``safe_mode=True``.

A ``keras.layers.Lambda`` stores Python bytecode; loading it needs ``safe_mode=False`` (arbitrary
code execution), so a model containing one is refused for export with the layer's name.
"""

from __future__ import annotations

from cnn_apps.errors import CnnAppsError


def unsafe_layers(model) -> list[str]:
    """Paths (``outer/inner/...``) of every ``keras.layers.Lambda`` in ``model``, nested models
    included."""
    import keras

    found, seen = [], set()

    def visit(layer, prefix):
        if id(layer) in seen:
            return
        seen.add(id(layer))
        path = f"{prefix}/{layer.name}" if prefix else layer.name
        if isinstance(layer, keras.layers.Lambda):
            found.append(path)
        # `_layers` also holds sub-layers a custom layer keeps as attributes.
        for child in list(getattr(layer, "layers", None) or []) + list(
                getattr(layer, "_layers", None) or []):
            visit(child, path)

    visit(model, "")
    return found


def check_exportable(model) -> None:
    """Raise ``CnnAppsError`` naming each Lambda layer of ``model`` (it would need unsafe
    loading)."""
    bad = unsafe_layers(model)
    if bad:
        raise CnnAppsError(
            f"model '{model.name}' contains Lambda layer(s) {', '.join(repr(b) for b in bad)}: "
            "they can only be loaded with keras safe_mode=False (arbitrary code), so they are "
            "not exported; replace each with a registered Keras layer subclass")


def _spec_names(fn) -> list[str]:
    """Signature input names of a ``tf.function``: each spec's name, else the argument's."""
    import inspect

    specs = list(fn.input_signature)
    try:
        params = list(inspect.signature(fn.python_function).parameters)
    except (TypeError, ValueError):
        params = []
    return [spec.name or (params[i] if i < len(params) else f"input_{i}")
            for i, spec in enumerate(specs)]


def describe_input(name: str, spec) -> str:
    """``images must be float32 (N, H, W, C) with H=32, W=32, C=3``-style expectation."""
    shape = spec.shape.as_list()
    if len(shape) == 4 and None not in shape[1:]:
        return (f"{name} must be {spec.dtype.name} (N, H, W, C) with H={shape[1]}, "
                f"W={shape[2]}, C={shape[3]}")
    if len(shape) == 1:
        return f"{name} must be a 1-D {spec.dtype.name} tensor (N,)"
    dims = ", ".join("N" if i == 0 and d is None else ("?" if d is None else str(d))
                     for i, d in enumerate(shape))
    return f"{name} must be {spec.dtype.name} of shape ({dims})"


def checked_input(x, name: str, spec):
    """``x`` after run-time checks against ``spec``: the known dims and element count (clear
    message), then ``tf.ensure_shape`` (the rank; rank checks are constant-folded from the
    static signature shape, ``EnsureShape`` is not), then finiteness for float inputs."""
    import tensorflow as tf

    dims = spec.shape.as_list()
    if dims and all(d is not None for d in dims[1:]):
        shape = tf.shape(x)
        padded = tf.concat([shape, tf.zeros([len(dims)], tf.int32)], 0)
        per_example = 1
        for d in dims[1:]:
            per_example *= d
        ok = tf.equal(tf.size(x), padded[0] * per_example)
        if len(dims) > 1:
            ok = tf.logical_and(ok, tf.reduce_all(tf.equal(padded[1:len(dims)], dims[1:])))
        check = tf.debugging.Assert(ok, [f"{describe_input(name, spec)}; got shape", shape])
        with tf.control_dependencies([check]):
            x = tf.identity(x)
    x = tf.ensure_shape(x, spec.shape)
    if spec.dtype.is_floating:
        verb = "contain" if name.endswith("s") else "contains"
        x = tf.debugging.assert_all_finite(x, f"{name} {verb} NaN or Inf")
    return x


def _one_pixel_png() -> bytes:
    """A valid 1x1 black grayscale PNG (the filler of an empty string batch)."""
    import struct
    import zlib

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00\x00")) + chunk(b"IEND", b""))


def _filler(spec):
    """One example matching ``spec`` (zeros; a 1x1 PNG for strings)."""
    import tensorflow as tf

    shape = [1] + [d for d in spec.shape.as_list()[1:]]
    if spec.dtype == tf.string:
        return tf.fill(shape, tf.constant(_one_pixel_png()))
    return tf.zeros(shape, spec.dtype)


def guard_endpoint(fn):
    """A ``tf.function`` with ``fn``'s input signature (same input names) that checks every
    input at run time (:func:`checked_input`) before calling ``fn``, and answers an empty
    batch with empty outputs.

    A loaded SavedModel signature checks only dtypes; a wrong-rank tensor that reaches a
    convolution aborts the serving process (oneDNN check failure), so every exported signature
    is wrapped with this. oneDNN kernels also reject 0-row batches with unrelated shape
    errors, so an empty batch runs ``fn`` on one filler example (zeros, or a 1x1 PNG for string
    inputs) and every output is cut back to 0 rows: outputs must be batched (first axis = N),
    as TF Serving's row format requires anyway.
    """
    import tensorflow as tf

    if getattr(fn, "input_signature", None) is None:
        raise CnnAppsError(f"serving endpoint {fn!r} needs a tf.function with an "
                           "input_signature")
    names = _spec_names(fn)
    specs = [tf.TensorSpec(spec.shape, spec.dtype, name=name)
             for spec, name in zip(fn.input_signature, names)]

    batched = bool(specs) and all(spec.shape.rank and spec.shape[0] is None for spec in specs)

    def guarded(*args):
        checked = [checked_input(x, name, spec) for x, name, spec in zip(args, names, specs)]
        if not batched:
            return fn(*checked)
        count = tf.shape(checked[0])[0]
        padded = [tf.cond(count > 0, lambda x=x: x, lambda spec=spec: _filler(spec))
                  for x, spec in zip(checked, specs)]
        return tf.nest.map_structure(lambda value: value[:count], fn(*padded))

    return tf.function(guarded, input_signature=specs)
