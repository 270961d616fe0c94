"""Analytic FLOP counts and the cached backbone zoo table (survey S0 §4: the cost of CNNs).

``count_flops(model, input_shape)`` = 2 × the multiply-adds of the convolution, depthwise,
separable, transposed-convolution and dense layers for ONE example (the convention of most
papers' "FLOPs" is multiply-adds; multiply by 2 to get theirs ×2, divide ours by 2 for
theirs). Per layer, from its weights and output shape:

* Conv1D/2D/3D (incl. grouped):   out_elements · prod(kernel.shape[:-1])   (kernel holds C_in/g)
* DepthwiseConv:                  out_elements · prod(kernel_size)
* SeparableConv:                  depthwise part + out_elements · C_in · depth_multiplier
* ConvTranspose:                  in_elements · prod(kernel.shape[:-1])
* Dense:                          out_elements · in_features
* this package's layers: HighwayConv2D (two k×k C→C convs), Highway (two d×d matmuls),
  TiledConv2D / LocallyConnected2D / SpaceToDepthConv2D (one kh·kw·C_in bank per output),
  MLPConv2D (k×k conv + 1×1 stack), DeformableConv2D (offset conv + sampled kernel).

Biases, BN, activations, pooling and additions are not counted (they are O(elements), not
O(elements·fan-in)). Output shapes are recorded by tracing the model once at batch 1
(``tf.function`` on the TensorFlow backend: no arithmetic is run), so composite layers such as
``ResidualBlock`` are counted through their sub-layers.

The zoo table: ``backbone_summary(name)`` builds one registered backbone and returns its
parameters, FLOPs at the default input, feature strides and weights flag;
``zoo_rows(names)`` reads them from ``zoo_table.json`` (written by
``bench/backbone_table.py``) and computes those missing or stale.

Example:
    >>> count_flops(create("resnet18", num_classes=1000), (224, 224, 3)) / 1e9   # ≈ 3.6
"""

from __future__ import annotations

import json
import math
from pathlib import Path

TABLE_PATH = Path(__file__).with_name("zoo_table.json")
_MISSING = object()


def _prod(values):
    return int(math.prod(int(v) for v in values))


def _elements(shape):
    return _prod(shape[1:])


def _counters():
    """``[(class, fn(layer, in_shape, out_shape) -> multiply-adds)]``, most specific first."""
    import keras

    from cnn_apps import layers as own

    base = keras.layers
    rows = []

    def add(cls, fn):
        if isinstance(cls, type):
            rows.append((cls, fn))

    add(getattr(own, "HighwayConv2D", None),
        lambda l, i, o: 2 * _elements(o) * _prod(l.kernel.shape[:-1]))
    add(getattr(own, "Highway", None), lambda l, i, o: 2 * _elements(o) * int(l.kernel.shape[0]))
    for name in ("TiledConv2D", "LocallyConnected2D"):
        add(getattr(own, name, None), lambda l, i, o: _elements(o) * _prod(l.kernel.shape[2:-1]))
    add(getattr(own, "SpaceToDepthConv2D", None),
        lambda l, i, o: _elements(o) * _prod(l.kernel.shape[:-1]))
    add(getattr(own, "MLPConv2D", None), _mlpconv_macs)
    add(getattr(own, "DeformableConv2D", None),
        lambda l, i, o: _prod(o[1:-1]) * _prod(l.kernel.shape[:-1])
        * (int(l.kernel.shape[-1]) + int(l.offset_kernel.shape[-1])))
    add(base.SeparableConv2D.__mro__[1], _separable_macs)       # BaseSeparableConv
    add(base.DepthwiseConv2D.__mro__[1],                         # BaseDepthwiseConv
        lambda l, i, o: _elements(o) * _prod(l.kernel_size))
    add(base.Conv2DTranspose.__mro__[1],                         # BaseConvTranspose
        lambda l, i, o: _elements(i) * _prod(l.kernel.shape[:-1]))
    add(base.Conv2D.__mro__[1],                                  # BaseConv (1D/2D/3D)
        lambda l, i, o: _elements(o) * _prod(l.kernel.shape[:-1]))
    add(base.Dense, lambda l, i, o: _elements(o) * int(l.kernel.shape[0]))
    return rows


def _mlpconv_macs(layer, in_shape, out_shape):
    positions = _prod(out_shape[1:-1])
    first = positions * _prod(layer.kernels[0].shape)
    return first + sum(positions * _prod(k.shape) for k in layer.kernels[1:])


def _separable_macs(layer, in_shape, out_shape):
    positions = _prod(out_shape[1:-1])
    depthwise = layer.depthwise_kernel.shape            # (*kernel_size, C_in, multiplier)
    pointwise = layer.pointwise_kernel.shape            # (1.., C_in·multiplier, filters)
    return positions * (_prod(depthwise) + _prod(pointwise))


def _check_input_shape(model, input_shape):
    declared = tuple(model.inputs[0].shape[1:]) if len(model.inputs) == 1 else None
    if declared is None:
        raise ValueError("count_flops: the model must have exactly one input")
    if input_shape is None:
        input_shape = declared
    if not isinstance(input_shape, (list, tuple)) or len(input_shape) != len(declared) or any(
            isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in input_shape):
        raise ValueError(f"count_flops: input_shape must be {len(declared)} positive integers "
                         f"(without the batch axis) matching the model input {declared}, got "
                         f"{input_shape!r}")
    for got, want in zip(input_shape, declared):
        if want is not None and got != want:
            raise ValueError(f"count_flops: input_shape {tuple(input_shape)} does not fit the "
                             f"model input {declared}")
    return tuple(input_shape)


def flops_by_layer(model, input_shape=None):
    """``[(layer name, class name, FLOPs)]`` per call of every counted layer, one example."""
    import keras
    import numpy as np

    if not isinstance(model, keras.Model):
        raise ValueError(f"count_flops: model must be a keras.Model, got "
                         f"{type(model).__name__}")
    input_shape = _check_input_shape(model, input_shape)
    counters = _counters()
    records, patched = [], []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        counter = next((fn for cls, fn in counters if isinstance(layer, cls)), None)
        if counter is None:
            continue
        original, saved = layer.call, layer.__dict__.get("call", _MISSING)

        def recording_call(*args, _original=original, _layer=layer, _counter=counter, **kw):
            out = _original(*args, **kw)
            shape_in, shape_out = tuple(args[0].shape), tuple(out.shape)
            records.append((_layer.name, type(_layer).__name__,
                            2 * int(_counter(_layer, shape_in, shape_out))))
            return out

        object.__setattr__(layer, "call", recording_call)
        patched.append((layer, saved))
    try:
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            spec = tf.TensorSpec((1,) + input_shape, model.inputs[0].dtype)
            tf.function(lambda x: model(x, training=False),
                        autograph=False).get_concrete_function(spec)
        else:
            model(np.zeros((1,) + input_shape, model.inputs[0].dtype), training=False)
    finally:
        for layer, saved in patched:
            if saved is _MISSING:
                object.__delattr__(layer, "call")
            else:
                object.__setattr__(layer, "call", saved)
    return records


def count_flops(model, input_shape=None):
    """2 × multiply-adds of the conv/dense/depthwise layers of ``model`` for one example.

    Args:
        model: a single-input ``keras.Model``.
        input_shape: ``(H, W, C)`` (no batch axis); defaults to the model's input shape,
            which must then be fully defined.
    """
    return sum(flops for _, _, flops in flops_by_layer(model, input_shape))


# ----------------------------------------------------------------------------- zoo table
def backbone_summary(name):
    """One zoo-table row: parameters (1000 classes), FLOPs at the default input, strides.

    ``strides`` are the feature levels' strides at the default input size, each rounded to the
    nearest power of two.
    """
    from cnn_apps.backbones.registry import create, get_spec

    spec = get_spec(name)
    classifier = create(name, num_classes=1000)
    trainable = int(sum(_prod(w.shape) for w in classifier.trainable_weights))
    features = create(name, features_only=True)
    height = spec.default_input_shape[0]
    # Nearest power of two of input/level size: valid-padding nets (AlexNet, Inception)
    # lose a few pixels per stage, e.g. 224/13 = 17.2 is a stride-16 level.
    strides = sorted({2 ** int(round(math.log2(height / level.shape[1])))
                      for level in features.output.values()})
    return {"name": name, "input_shape": list(spec.default_input_shape),
            "params": int(classifier.count_params()), "trainable_params": trainable,
            "flops": int(count_flops(classifier)), "strides": strides,
            "imagenet_weights": bool(spec.imagenet_weights), "description": spec.description}


def load_zoo_table(path=None):
    """``{name: row}`` from the cached table (empty when the file is absent or unreadable)."""
    path = Path(path) if path is not None else TABLE_PATH
    try:
        rows = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {row["name"]: row for row in rows if isinstance(row, dict) and "name" in row}


def zoo_rows(names=None, path=None):
    """Rows for ``names`` (default: every registered backbone), cached where the cache is
    current (same description, input shape and weights flag), computed otherwise."""
    from cnn_apps.backbones.registry import get_spec, list_backbones

    table = load_zoo_table(path)
    rows = []
    for name in (names if names is not None else list_backbones()):
        spec = get_spec(name)
        row = table.get(name)
        if row is None or row.get("description") != spec.description \
                or tuple(row.get("input_shape", ())) != spec.default_input_shape \
                or row.get("imagenet_weights") != spec.imagenet_weights:
            row = backbone_summary(name)
        rows.append(row)
    return rows


def write_zoo_table(names=None, path=None, progress=None):
    """Compute every row afresh and write the JSON table; returns the rows."""
    from cnn_apps.backbones.registry import list_backbones

    rows = []
    for name in (names if names is not None else list_backbones()):
        rows.append(backbone_summary(name))
        if progress is not None:
            progress(rows[-1])
    path = Path(path) if path is not None else TABLE_PATH
    path.write_text(json.dumps(rows, indent=1) + "\n")
    return rows
