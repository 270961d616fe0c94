"""Backbone registry: ``create`` / ``list_backbones`` / ``register_backbone`` (timm style).

A backbone builder takes a Keras input tensor and returns a :class:`BackboneGraph`: the final
feature map plus the named pyramid levels (``P2``..``P5`` = strides 4..32; small nets use the
levels they have). ``create`` turns that graph into one of three models:

* the feature extractor (default): image -> final feature map;
* ``features_only=True``: image -> ``{"P2": ..., "P5": ...}``;
* ``num_classes=N``: the paper's full classification network (its own head).
"""

from __future__ import annotations

import difflib
import inspect
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from cnn_apps.errors import CnnAppsError, WeightsError


@dataclass
class BackboneGraph:
    """What a builder returns: tensors of one functional graph."""

    output: object                       # final feature map (N, h, w, C)
    features: dict = field(default_factory=dict)  # {"P2": tensor, ...} by stride
    extras: dict = field(default_factory=dict)    # other tensors a paper head needs (aux heads)


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    builder: Callable                    # builder(inputs, imagenet=False, **kwargs) -> BackboneGraph
    default_input_shape: tuple
    description: str
    head: Callable | None = None         # head(feature_map, num_classes[, graph]) -> probabilities
    imagenet_weights: bool = False       # keras.applications ships ImageNet weights
    preprocessing: str = "unit"          # see cnn_apps.backbones.preprocessing.ImagePreprocessing
    min_input_size: int = 32


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(name: str, *, default_input_shape, description: str, head=None,
                      imagenet_weights: bool = False, preprocessing: str = "unit",
                      min_input_size: int = 32):
    """Decorator registering ``builder(inputs, imagenet=False, **kwargs) -> BackboneGraph``."""

    def decorator(builder):
        if name in _REGISTRY:
            raise ValueError(f"backbone '{name}' is already registered")
        _REGISTRY[name] = BackboneSpec(name, builder, tuple(default_input_shape), description,
                                       head, imagenet_weights, preprocessing, min_input_size)
        return builder

    return decorator


def list_backbones() -> list[str]:
    _ensure_loaded()
    return sorted(_REGISTRY)


def get_spec(name: str) -> BackboneSpec:
    _ensure_loaded()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(str(name), _REGISTRY, n=4, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise CnnAppsError(f"unknown backbone '{name}'.{hint} "
                           f"Registered backbones: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def create(name: str, input_shape=None, weights=None, features_only: bool = False,
           num_classes: int | None = None, **kwargs):
    """Build backbone ``name``.

    Args:
      name: a registered name (``list_backbones()``).
      input_shape: ``(H, W, C)``; defaults to the paper's input size.
      weights: ``None`` (random init), ``"imagenet"`` (where ``keras.applications`` ships
        them), or a local file: ``.weights.h5`` / ``.h5`` (``model.load_weights``) or a
        ``.keras`` model (a run checkpoint) whose backbone weights are copied.
      features_only: return ``{"P2".."P5": feature map}`` instead of the last map.
      num_classes: return the paper's full classification network with this many classes.
      **kwargs: builder options (e.g. ``width``, ``activation``).
    """
    import keras

    spec = get_spec(name)
    if features_only and num_classes:
        raise CnnAppsError("create(): features_only=True and num_classes are exclusive")
    input_shape = tuple(input_shape) if input_shape is not None else spec.default_input_shape
    if len(input_shape) != 3:
        raise CnnAppsError(f"backbone '{name}': input_shape must be (height, width, channels), "
                           f"got {input_shape}")
    small = [s for s in input_shape[:2] if s is not None and s < spec.min_input_size]
    if small:
        raise CnnAppsError(f"backbone '{name}' needs inputs of at least {spec.min_input_size}"
                           f" pixels per side, got input_shape={input_shape}")
    imagenet = weights == "imagenet"
    if imagenet and not spec.imagenet_weights:
        raise WeightsError(f"backbone '{name}' has no ImageNet weights; pass weights=None or a "
                           "local weights file")
    inputs = keras.Input(shape=input_shape, name="images")
    graph = spec.builder(inputs, imagenet=imagenet, **kwargs)
    if features_only:
        model = keras.Model(inputs, dict(sorted(graph.features.items())),
                            name=f"{name}_features")
    elif num_classes:
        head = spec.head or global_pool_head
        wants_graph = "graph" in inspect.signature(head).parameters
        outputs = (head(graph.output, num_classes, graph=graph) if wants_graph
                   else head(graph.output, num_classes))
        model = keras.Model(inputs, outputs, name=name)
    else:
        model = keras.Model(inputs, graph.output, name=name)
    if weights is not None and not imagenet:
        load_weights_file(model, weights)
    return model


def global_pool_head(feature_map, num_classes):
    """Global average pooling + softmax classifier (ResNet, GoogLeNet, MobileNet heads)."""
    import keras

    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(feature_map)
    return keras.layers.Dense(num_classes, activation="softmax", name="predictions",
                              dtype="float32")(x)


def load_weights_file(model, path) -> None:
    """Load ``path`` into ``model``; a clear ``WeightsError`` when it does not fit."""
    import keras

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file '{path}' does not exist")
    try:
        if path.suffix == ".keras":
            source = keras.saving.load_model(path, compile=False, safe_mode=True)
            source = _find_submodel(source, model)
            copy_weights(source, model, str(path))
        else:
            # Keras only warns when parts of the file do not fit and keeps fresh weights
            # there; a silently half-loaded backbone is worse than an error.
            with warnings.catch_warnings():
                warnings.simplefilter("error", UserWarning)
                model.load_weights(str(path))
    except WeightsError:
        raise
    except Exception as exc:  # Keras raises ValueError/KeyError/OSError variants here
        raise WeightsError(f"weights file '{path}' does not match model '{model.name}': "
                           f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc


def _find_submodel(source, target):
    """The model inside ``source`` whose weights fit ``target`` (a run checkpoint nests the
    backbone as a layer named ``backbone``)."""
    import keras

    candidates = [source] + [layer for layer in source.layers
                             if isinstance(layer, keras.Model)]
    for candidate in candidates:
        if _shapes(candidate) == _shapes(target):
            return candidate
    return candidates[-1] if len(candidates) > 1 else source


def _shapes(model):
    return [tuple(w.shape) for w in model.weights]


def copy_weights(source, target, source_name: str) -> None:
    src, dst = _shapes(source), _shapes(target)
    if src != dst:
        raise WeightsError(
            f"weights file '{source_name}' does not match model '{target.name}': it holds "
            f"{len(src)} arrays, the model needs {len(dst)}"
            + (f"; first difference at index {_first_diff(src, dst)}: "
               f"{_at(src, _first_diff(src, dst))} vs {_at(dst, _first_diff(src, dst))}"))
    target.set_weights(source.get_weights())


def _first_diff(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def _at(shapes, i):
    return shapes[i] if i < len(shapes) else "nothing"


_LOADED = False


def _ensure_loaded():
    """Import the modules that register backbones (once)."""
    global _LOADED
    if not _LOADED:
        _LOADED = True
        from cnn_apps.backbones import _zoo  # noqa: F401
