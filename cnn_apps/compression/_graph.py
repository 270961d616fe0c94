"""Graph helpers shared by the compression transforms.

:func:`rebuild` copies a Functional model (nested Functional backbones included) with every
layer re-created from its config and its trained weights copied, and lets a transform replace
chosen layers by a small sub-graph of new layers. The original model is never modified.
"""

from __future__ import annotations

import keras
import numpy as np


def check_model(model, argument="model"):
    if not isinstance(model, keras.Model):
        raise ValueError(f"{argument} must be a keras.Model, got {type(model).__name__}")
    if not model.built:
        raise ValueError(f"{argument} must be built (call it once or load a trained model)")


def rebuild(model, replace=None):
    """A new model computing the same graph with copied weights.

    ``replace(layer, *args, **kwargs)`` is called for every original (non-model) layer with the
    new symbolic inputs; it returns the replacement's output tensors (after setting the new
    layers' weights) or ``None`` to keep a copy of ``layer``.
    """
    check_model(model)
    originals, replaced = {}, set()

    def clone_layer(layer):
        new = layer.__class__.from_config(layer.get_config())
        originals[id(new)] = (new, layer)
        return new

    def call_layer(new, *args, **kwargs):
        entry = originals.get(id(new))
        if entry is not None and replace is not None:
            out = replace(entry[1], *args, **kwargs)
            if out is not None:
                replaced.add(id(new))
                return out
        return new(*args, **kwargs)

    clone = keras.models.clone_model(model, clone_function=clone_layer, call_function=call_layer,
                                     recursive=True)
    for key, (new, old) in originals.items():
        if key not in replaced and old.weights:
            new.set_weights(old.get_weights())
    return clone


def iter_layers(model):
    """Every non-model layer of ``model``, nested models flattened, in graph order."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from iter_layers(layer)
        else:
            yield layer


def count_params(model) -> int:
    return int(sum(int(np.prod(w.shape)) for w in model.weights))


def count_nonzero(model) -> int:
    return int(sum(int(np.count_nonzero(w.numpy() if hasattr(w, "numpy") else w))
                   for w in model.weights))


def prunable_kernels(model, layer_types=None):
    """``[(layer, kernel variable)]`` of the Dense / Conv2D-family layers (the weights that
    magnitude pruning and quantization act on)."""
    layer_types = layer_types or (keras.layers.Dense, keras.layers.Conv2D,
                                  keras.layers.Conv1D, keras.layers.Conv3D,
                                  keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)
    found = []
    for layer in iter_layers(model):
        if isinstance(layer, layer_types) and getattr(layer, "kernel", None) is not None:
            found.append((layer, layer.kernel))
    return found
