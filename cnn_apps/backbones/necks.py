"""Necks and heads that work with any registered backbone.

* :class:`FeaturePyramid` — the Feature Pyramid Network neck (Lin et al. 2017). FPN is not in
  the seeds (SEED_CHECKLIST §14.2 / §17 gap list); it generalizes the multi-scale feature use
  of the detectors the survey covers (S0 §5.2, SPP/multi-scale pooling in S0 §3.2.5-3.2.6).
  For levels ``C_l`` (stride 2^l, finest first) with ``d`` output channels:

      M_top = lateral_top(C_top)                   (1×1 conv to d channels)
      M_l   = lateral_l(C_l) + up2(M_{l+1})        (nearest 2× upsampling, cropped to C_l)
      P_l   = smooth_l(M_l)                        (3×3 conv, d channels)
      P_6   = conv3×3/2(P_5)                       (optional, ``extra_level=True``)

  No normalization or activation (as in the paper). Deterministic.
* :func:`feature_pyramid_model` — image → ``{"P2": ..., "P5"(, "P6")}`` from a backbone name.
* :func:`attach_classification_head` — GAP + softmax classifier on any backbone model.

Example:
    >>> features = create("resnet18", features_only=True)
    >>> fpn = FeaturePyramid(channels=128, extra_level=True)
    >>> pyramid = fpn(features.output)          # {"P2".."P6"}, 128 channels each
"""

from __future__ import annotations

import keras
from keras import ops

from cnn_apps.backbones.registry import create


def _level_number(name):
    if not (isinstance(name, str) and name[:1] == "P" and name[1:].isdigit()):
        raise ValueError(f"FeaturePyramid: feature names must be 'P<stride exponent>' such as "
                         f"'P3', got {name!r}")
    return int(name[1:])


@keras.saving.register_keras_serializable(package="cnn_apps")
class FeaturePyramid(keras.layers.Layer):
    """FPN neck: lateral 1×1 convs, top-down nearest upsample-add, 3×3 smoothing.

    Called on a dict ``{"P2": C2, ..., "P5": C5}`` of backbone maps (any subset of consecutive
    or non-consecutive levels named by stride, each level half the size of the previous one;
    channels may differ). Returns a dict with the same keys, every map with ``channels``
    channels and its input's spatial size, plus ``"P<top+1>"`` (a 3×3 stride-2 conv of the top
    output) when ``extra_level`` is true. Odd sizes are handled by cropping the upsampled map
    to the finer level. Sub-layers ``lateral_P*``, ``smooth_P*``, ``extra_P*``.

    Args:
        channels: d, the channels of every output level.
        extra_level: add the next coarser level (P6 for a P2..P5 input) by a stride-2 conv.
        kernel_initializer: of every convolution.

    Example:
        >>> feats = {"P3": keras.ops.ones((1, 8, 8, 16)), "P4": keras.ops.ones((1, 4, 4, 32))}
        >>> {k: v.shape for k, v in FeaturePyramid(8)(feats).items()}
        {'P3': (1, 8, 8, 8), 'P4': (1, 4, 4, 8)}
    """

    def __init__(self, channels=256, extra_level=False, kernel_initializer="glorot_uniform",
                 **kwargs):
        super().__init__(**kwargs)
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"FeaturePyramid: channels must be a positive integer, got "
                             f"{channels!r}")
        self.channels = channels
        self.extra_level = bool(extra_level)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def _conv(self, kernel_size, name, strides=1):
        return keras.layers.Conv2D(self.channels, kernel_size, strides=strides, padding="same",
                                   kernel_initializer=self.kernel_initializer, name=name,
                                   dtype=self.dtype_policy)

    def build(self, input_shape):
        if not isinstance(input_shape, dict) or not input_shape:
            raise ValueError("FeaturePyramid is called on a dict {'P2': map, ...} of feature "
                             f"maps, got {type(input_shape).__name__}")
        self.levels = sorted(input_shape, key=_level_number)
        for name in self.levels:
            shape = input_shape[name]
            if len(shape) != 4 or shape[-1] is None:
                raise ValueError(f"FeaturePyramid: level {name} must be (batch, H, W, C) with a "
                                 f"known C, got {tuple(shape)}")
        self.laterals, self.smooths = {}, {}
        for name in self.levels:
            shape = tuple(input_shape[name])
            self.laterals[name] = self._conv(1, f"lateral_{name}")
            self.laterals[name].build(shape)
            self.smooths[name] = self._conv(3, f"smooth_{name}")
            self.smooths[name].build(shape[:-1] + (self.channels,))
        self.extra = None
        if self.extra_level:
            top = self.levels[-1]
            self.extra_name = f"P{_level_number(top) + 1}"
            self.extra = self._conv(3, f"extra_{self.extra_name}", strides=2)
            self.extra.build(tuple(input_shape[top])[:-1] + (self.channels,))
        self.built = True

    @staticmethod
    def _upsample_to(x, reference):
        """Nearest 2× upsampling of ``x`` cropped to ``reference``'s spatial size."""
        x = ops.repeat(ops.repeat(x, 2, axis=1), 2, axis=2)
        shape = ops.shape(reference)
        return x[:, :shape[1], :shape[2], :]

    def call(self, inputs):
        merged = None
        outputs = {}
        for name in reversed(self.levels):            # coarsest first (top-down)
            lateral = self.laterals[name](inputs[name])
            merged = lateral if merged is None else lateral + self._upsample_to(merged, lateral)
            outputs[name] = self.smooths[name](merged)
        if self.extra is not None:
            outputs[self.extra_name] = self.extra(outputs[self.levels[-1]])
        return {name: outputs[name] for name in sorted(outputs, key=_level_number)}

    def compute_output_shape(self, input_shape):
        shapes = {name: tuple(shape)[:-1] + (self.channels,)
                  for name, shape in input_shape.items()}
        if self.extra_level:
            top = max(input_shape, key=_level_number)
            b, h, w, _ = input_shape[top]
            shapes[f"P{_level_number(top) + 1}"] = (
                b, None if h is None else -(-h // 2), None if w is None else -(-w // 2),
                self.channels)
        return shapes

    def get_config(self):
        return {**super().get_config(), "channels": self.channels,
                "extra_level": self.extra_level,
                "kernel_initializer": keras.saving.serialize_keras_object(
                    self.kernel_initializer)}


def feature_pyramid_model(backbone, channels=256, extra_level=False, input_shape=None,
                          levels=None, **backbone_options):
    """Image → FPN levels: a backbone's ``features_only`` model + :class:`FeaturePyramid`.

    Args:
        backbone: a registered backbone name, or a ``features_only`` Keras model (dict output).
        channels, extra_level: of the :class:`FeaturePyramid`.
        input_shape, **backbone_options: passed to ``create`` when ``backbone`` is a name.
        levels: the backbone levels to use (default: all of them, e.g. P2..P5).
    """
    if isinstance(backbone, str):
        backbone = create(backbone, input_shape=input_shape, features_only=True,
                          **backbone_options)
    if not isinstance(backbone, keras.Model) or not isinstance(backbone.output, dict):
        raise ValueError("feature_pyramid_model: backbone must be a registered name or a "
                         "features_only model whose output is a dict of levels")
    features = backbone.output
    if levels is not None:
        missing = [name for name in levels if name not in features]
        if missing or not levels:
            raise ValueError(f"feature_pyramid_model: levels {list(levels)} are not all among "
                             f"the backbone's {sorted(features)}")
        features = {name: features[name] for name in levels}
    pyramid = FeaturePyramid(channels, extra_level=extra_level, name="fpn")(features)
    return keras.Model(_model_inputs(backbone), pyramid, name=f"{backbone.name}_fpn")


def _model_inputs(model):
    """A single input tensor for a one-input model (keeps the call structure plain)."""
    return model.inputs[0] if len(model.inputs) == 1 else model.inputs


def attach_classification_head(backbone_model, num_classes, dropout_rate=0.0, level=None):
    """Classifier on any backbone: ``softmax(W · GAP(feature map) + b)`` (S0 §3.1.4 GAP head).

    Args:
        backbone_model: a Keras model whose output is a (batch, H, W, C) map, or a dict of
            such maps (a ``features_only`` model; the coarsest level, or ``level``, is used).
        num_classes: number of classes (>= 2).
        dropout_rate: dropout before the classifier, in [0, 1).
        level: which dict entry to classify from (default: the highest P-number).

    Returns a new model from the backbone's inputs to class probabilities (float32).

    Example:
        >>> model = attach_classification_head(create("tiled_cnn"), num_classes=10)
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"attach_classification_head: num_classes must be an integer >= 2, "
                         f"got {num_classes!r}")
    if not 0.0 <= float(dropout_rate) < 1.0:
        raise ValueError(f"attach_classification_head: dropout_rate must be in [0, 1), got "
                         f"{dropout_rate!r}")
    if not isinstance(backbone_model, keras.Model):
        raise ValueError(f"attach_classification_head: backbone_model must be a keras.Model, "
                         f"got {type(backbone_model).__name__}")
    output = backbone_model.output
    if isinstance(output, dict):
        key = level if level is not None else max(output, key=_level_number)
        if key not in output:
            raise ValueError(f"attach_classification_head: level {key!r} is not among "
                             f"{sorted(output)}")
        output = output[key]
    if len(output.shape) != 4:
        raise ValueError(f"attach_classification_head: the backbone output must be a "
                         f"(batch, H, W, C) map, got shape {tuple(output.shape)}")
    x = keras.layers.GlobalAveragePooling2D(name="head_avg_pool")(output)
    if dropout_rate:
        x = keras.layers.Dropout(float(dropout_rate), name="head_dropout")(x)
    probs = keras.layers.Dense(num_classes, activation="softmax", name="head_predictions",
                               dtype="float32")(x)
    return keras.Model(_model_inputs(backbone_model), probs,
                       name=f"{backbone_model.name}_classifier")
