"""Shortcut and skip-connection blocks (survey S0 §3.6.5; SEED_CHECKLIST §11, R-15).

* :class:`Highway`, :class:`HighwayConv2D` - gated shortcuts (Srivastava et al., S-01);
* :class:`ResidualBlock` - basic / bottleneck, post- / pre-activation, grouped (ResNeXt),
  wide (dropout between convs) and stochastic-depth residual blocks (S-02..S-05, S-12);
* :class:`DenseBlock` - DenseNet dense connectivity (S-09);
* :class:`StochasticDepth` - random residual-branch dropping (Huang et al., R-15).

Composite blocks create named sub-layers (``conv1``, ``bn1``, ``shortcut_conv`` ...), so
their weights are addressable as ``block_name/conv1/kernel`` and a backbone can map
pretrained weights onto them. All take channels-last feature maps ``(batch, H, W, C)``.
"""

from __future__ import annotations

import keras
from keras import ops

from cnn_apps.layers.activations import ACTIVATIONS, get_activation
from cnn_apps.layers._validation import positive_int as _positive_int
from cnn_apps.layers.grouped import GroupedConv2D

__all__ = ["Highway", "HighwayConv2D", "ResidualBlock", "DenseBlock", "StochasticDepth"]

_PACKAGE = "cnn_apps"


def _check_activation(activation):
    """Shape-preserving activation name: this package's (:data:`ACTIVATIONS`) or Keras's."""
    if not isinstance(activation, str):
        raise ValueError(f"activation must be a name (string), got {activation!r}")
    if activation in ("maxout", "probout"):
        raise ValueError(f"activation {activation!r} changes the channel count; a block "
                         f"needs a shape-preserving activation")
    if activation not in ACTIVATIONS:
        keras.activations.get(activation)      # raises ValueError for an unknown name
    return activation


def _activation_layer(activation, name, dtype):
    if activation in ACTIVATIONS:
        return get_activation(activation, name=name, dtype=dtype)
    return keras.layers.Activation(activation, name=name, dtype=dtype)


def _check_rank4(layer, input_shape):
    if len(input_shape) != 4 or input_shape[-1] is None:
        raise ValueError(f"{type(layer).__name__} expects (batch, H, W, C) inputs with a known "
                         f"C, got shape {tuple(input_shape)}")


class _GatedMixin:
    """Weights and config shared by the dense and convolutional highway layers."""

    def _init_gated(self, activation, transform_bias, kernel_initializer, bias_initializer,
                    kernel_regularizer):
        self.activation = keras.activations.get(activation)
        self.transform_bias = float(transform_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

    def _add_gated_weights(self, kernel_shape, units):
        def kernel(name):
            return self.add_weight(name=name, shape=kernel_shape,
                                   initializer=self.kernel_initializer,
                                   regularizer=self.kernel_regularizer)
        self.kernel = kernel("kernel")
        self.bias = self.add_weight(name="bias", shape=(units,),
                                    initializer=self.bias_initializer)
        self.gate_kernel = kernel("gate_kernel")
        self.gate_bias = self.add_weight(
            name="gate_bias", shape=(units,),
            initializer=keras.initializers.Constant(self.transform_bias))

    def _combine(self, x, h_pre, t_pre):
        h = self.activation(h_pre + self.bias)
        t = ops.sigmoid(t_pre + self.gate_bias)
        return x + t * (h - x)             # = H·T + x·(1 - T), one multiply fewer

    def _gated_config(self):
        ser = keras.saving.serialize_keras_object
        return {"activation": keras.activations.serialize(self.activation),
                "transform_bias": self.transform_bias,
                "kernel_initializer": ser(self.kernel_initializer),
                "bias_initializer": ser(self.bias_initializer),
                "kernel_regularizer": ser(self.kernel_regularizer)}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Highway(_GatedMixin, keras.layers.Layer):
    """Dense highway layer: ``y = H(x)·T(x) + x·(1 - T(x))`` on the last axis.

    Survey S0 §3.6.5 (Srivastava et al.; SEED_CHECKLIST S-01): ``H(x) = φ(x W_H + b_H)`` and
    the transform gate ``T(x) = sigmoid(x W_T + b_T)``. ``b_T`` starts at ``transform_bias``
    (negative, e.g. -1 .. -3) so the layer initially carries its input through, which is what
    lets tens to hundreds of such layers train. Input and output sizes are equal (d).
    Deterministic; weights ``kernel``/``bias`` (H) and ``gate_kernel``/``gate_bias`` (T).
    Cost: two d×d matmuls, about twice a Dense(d) layer.

    Args:
        activation: φ, the activation of H (any Keras activation name or callable).
        transform_bias: initial value of the gate bias b_T.
        kernel_initializer, bias_initializer, kernel_regularizer: for W_H, W_T and b_H.

    Example:
        >>> layer = Highway(activation="relu", transform_bias=-2.0)
        >>> layer(keras.ops.ones((4, 32))).shape
        (4, 32)
    """

    def __init__(self, activation="relu", transform_bias=-1.0,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self._init_gated(activation, transform_bias, kernel_initializer, bias_initializer,
                         kernel_regularizer)

    def build(self, input_shape):
        units = input_shape[-1]
        if units is None:
            raise ValueError("Highway needs a known last input dimension, got None")
        self._add_gated_weights((units, units), units)
        self.built = True

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        return self._combine(x, ops.matmul(x, self.kernel), ops.matmul(x, self.gate_kernel))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(self._gated_config())
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class HighwayConv2D(_GatedMixin, keras.layers.Layer):
    """Convolutional highway layer: ``y = H(x)·T(x) + x·(1 - T(x))`` with convolutions.

    Survey S0 §3.6.5 (Srivastava et al.; SEED_CHECKLIST S-01), the form used by highway
    CNNs: ``H(x) = φ(conv(x, K_H) + b_H)``, ``T(x) = sigmoid(conv(x, K_T) + b_T)``, both
    k×k, stride 1, "same" padding and C→C channels so the shapes match; ``b_T`` starts at
    ``transform_bias`` (negative: carry behaviour at the start). Deterministic. Cost: two
    C→C convolutions, about twice a Conv2D(C, k).

    Args:
        kernel_size: k (int or (kh, kw)).
        activation: φ, the activation of H.
        transform_bias: initial gate bias b_T.
        dilation_rate: dilation of both convolutions.
        kernel_initializer, bias_initializer, kernel_regularizer: for K_H, K_T and b_H.

    Example:
        >>> layer = HighwayConv2D(kernel_size=3, transform_bias=-1.0)
        >>> layer(keras.ops.ones((2, 16, 16, 32))).shape
        (2, 16, 16, 32)
    """

    def __init__(self, kernel_size=3, activation="relu", transform_bias=-1.0, dilation_rate=1,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        sizes = (kernel_size,) * 2 if isinstance(kernel_size, int) else tuple(kernel_size)
        if len(sizes) != 2:
            raise ValueError(f"kernel_size must be an int or 2 ints, got {kernel_size!r}")
        self.kernel_size = tuple(_positive_int(k, "kernel_size") for k in sizes)
        self.dilation_rate = _positive_int(dilation_rate, "dilation_rate")
        self._init_gated(activation, transform_bias, kernel_initializer, bias_initializer,
                         kernel_regularizer)

    def build(self, input_shape):
        _check_rank4(self, input_shape)
        channels = input_shape[-1]
        self._add_gated_weights(self.kernel_size + (channels, channels), channels)
        self.built = True

    def _conv(self, x, kernel):
        return ops.conv(x, kernel, strides=1, padding="same", data_format="channels_last",
                        dilation_rate=self.dilation_rate)

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        return self._combine(x, self._conv(x, self.kernel), self._conv(x, self.gate_kernel))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"kernel_size": self.kernel_size, "dilation_rate": self.dilation_rate,
                       **self._gated_config()})
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class StochasticDepth(keras.layers.Layer):
    """Stochastic depth merge of ``[shortcut, residual]`` (Huang et al.; S0 §3.6.5, R-15).

    Training (``training=True``): ``y_n = shortcut_n + b_n · residual_n`` with one
    ``b_n ~ Bernoulli(p)`` per example n, so a dropped block is bypassed by its identity.
    Inference: ``y = shortcut + p · residual`` (deterministic; the expected training output),
    as in Huang et al. (no rescaling during training). ``p = 1`` is a plain residual add.

    Args:
        survival_probability: p, the probability of keeping the residual branch, in (0, 1].
        seed: integer seed of the layer's random generator (``None``: random).

    Example:
        >>> merge = StochasticDepth(survival_probability=0.8)
        >>> y = merge([shortcut, residual], training=True)
        >>> y_test = merge([shortcut, residual])                  # shortcut + 0.8·residual
    """

    def __init__(self, survival_probability=0.8, seed=None, **kwargs):
        super().__init__(**kwargs)
        p = float(survival_probability)
        if not 0.0 < p <= 1.0:
            raise ValueError(f"survival_probability must be in (0, 1], got {p}")
        self.survival_probability = p
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) != 2 \
                or not isinstance(input_shape[0], (list, tuple)):
            raise ValueError("StochasticDepth is called on [shortcut, residual]")
        if tuple(input_shape[0][1:]) != tuple(input_shape[1][1:]):
            raise ValueError(f"shortcut and residual shapes differ: {tuple(input_shape[0])} vs "
                             f"{tuple(input_shape[1])}")
        self.built = True

    def call(self, inputs, training=None):
        shortcut, residual = (ops.cast(t, self.compute_dtype) for t in inputs)
        p = self.survival_probability
        if p == 1.0:
            return shortcut + residual
        if not training:
            return shortcut + ops.cast(p, self.compute_dtype) * residual
        mask_shape = (ops.shape(residual)[0],) + (1,) * (len(residual.shape) - 1)
        keep = keras.random.uniform(mask_shape, dtype="float32", seed=self.seed_generator) < p
        return shortcut + ops.where(keep, residual, ops.zeros_like(residual))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def get_config(self):
        config = super().get_config()
        config.update({"survival_probability": self.survival_probability, "seed": self.seed})
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ResidualBlock(keras.layers.Layer):
    """Residual block ``x_{l+1} = x_l + F(x_l)`` in its ResNet variants (S0 §3.6.5).

    SEED_CHECKLIST S-02..S-05. With C_out = ``filters`` (basic) or ``filters·expansion``
    (bottleneck), all convolutions bias-free with "same" padding:

    * post-activation (He et al. 2015, ``preactivation=False``), output ``act(F(x) + s(x))``:
      basic ``F = BN∘conv3x3(F)∘act∘BN∘conv3x3(F, stride)`` (S-03); bottleneck
      ``F = BN∘conv1x1(C_out)∘act∘BN∘conv3x3(F, stride, groups)∘act∘BN∘conv1x1(F)`` (S-04;
      the stride sits on the 3x3 as in "ResNet v1.5"). Shortcut ``s`` = identity, or
      ``BN∘conv1x1(C_out, stride)`` (projection) when the stride is not 1 or C != C_out.
    * pre-activation (He et al. 2016, ``preactivation=True``), output ``F(x) + s(x)`` with
      every conv preceded by BN-act (S-05): ``F = conv∘act∘BN ... conv∘act∘BN(x)``; the
      projection shortcut (when needed) is a plain conv1x1 applied to ``act(BN(x))``.
    * ``groups`` > 1 makes the 3x3 convolutions grouped (ResNeXt: e.g. filters=128,
      groups=32, expansion=2); ``dropout_rate`` adds dropout before the last conv (Wide
      ResNet); ``survival_probability`` < 1 merges the branches with :class:`StochasticDepth`.

    Deterministic at inference; in training BN uses batch statistics and dropout /
    stochastic depth sample. Sub-layers: ``conv1..conv3``, ``bn1..bn3``, ``act1..``,
    ``shortcut_conv``, ``shortcut_bn``, ``dropout``, ``stochastic_depth``.

    Args:
        filters: width F of the block's convolutions (bottleneck: of the 1x1/3x3 reductions).
        bottleneck: 1x1-3x3-1x1 bottleneck instead of two 3x3 convolutions.
        preactivation: BN-act-conv ordering (ResNet v2) instead of conv-BN-act.
        strides: stride of the block (on the first 3x3 conv and the projection).
        expansion: output width multiplier of a bottleneck block (ignored for basic blocks).
        groups: groups of the 3x3 convolutions (must divide their in/out channels).
        activation: a shape-preserving name from ``ACTIVATIONS`` or Keras (default relu).
        dropout_rate: dropout before the last conv, in [0, 1).
        survival_probability: stochastic-depth keep probability of the residual branch.
        kernel_initializer, kernel_regularizer: for every convolution.
        bn_momentum, bn_epsilon: of every BatchNormalization.
        seed: seed of the dropout and stochastic-depth generators.

    Example:
        >>> block = ResidualBlock(64, bottleneck=True, strides=2)     # 256 output channels
        >>> block(keras.ops.ones((2, 16, 16, 128))).shape
        (2, 8, 8, 256)
    """

    def __init__(self, filters, bottleneck=False, preactivation=False, strides=1, expansion=4,
                 groups=1, activation="relu", dropout_rate=0.0, survival_probability=1.0,
                 kernel_initializer="he_normal", kernel_regularizer=None, bn_momentum=0.9,
                 bn_epsilon=1e-5, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.filters = _positive_int(filters, "filters")
        self.bottleneck = bool(bottleneck)
        self.preactivation = bool(preactivation)
        self.strides = _positive_int(strides, "strides")
        self.expansion = _positive_int(expansion, "expansion")
        self.groups = _positive_int(groups, "groups")
        if self.filters % self.groups:
            raise ValueError(f"filters ({filters}) must be divisible by groups ({groups})")
        self.activation = _check_activation(activation)
        self.dropout_rate = float(dropout_rate)
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1), got {dropout_rate}")
        self.survival_probability = float(survival_probability)
        if not 0.0 < self.survival_probability <= 1.0:
            raise ValueError(f"survival_probability must be in (0, 1], got "
                             f"{survival_probability}")
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bn_momentum = float(bn_momentum)
        self.bn_epsilon = float(bn_epsilon)
        self.seed = seed
        self.out_channels = self.filters * (self.expansion if self.bottleneck else 1)

    def _conv_specs(self):
        """``(kernel_size, filters, strides, groups)`` of the residual branch, in order."""
        f, s, g = self.filters, self.strides, self.groups
        if self.bottleneck:
            return [(1, f, 1, 1), (3, f, s, g), (1, self.out_channels, 1, 1)]
        return [(3, f, s, g), (3, f, 1, g)]

    def _conv(self, kernel_size, filters, strides, groups, name):
        # GroupedConv2D is keras Conv2D without its forced XLA for groups > 1 (slow on CPU).
        return GroupedConv2D(filters, kernel_size, strides=strides, padding="same",
                                   groups=groups, use_bias=False, name=name,
                                   kernel_initializer=self.kernel_initializer,
                                   kernel_regularizer=self.kernel_regularizer,
                                   dtype=self.dtype_policy)

    def _bn(self, name):
        return keras.layers.BatchNormalization(momentum=self.bn_momentum,
                                               epsilon=self.bn_epsilon, name=name,
                                               dtype=self.dtype_policy)

    def build(self, input_shape):
        _check_rank4(self, input_shape)
        channels = input_shape[-1]
        specs = self._conv_specs()
        self.convs, self.bns = [], []
        shape = tuple(input_shape)
        for i, (k, f, s, g) in enumerate(specs, start=1):
            if shape[-1] % g:
                raise ValueError(f"ResidualBlock: the input of conv{i} has {shape[-1]} channels, "
                                 f"not divisible by groups={g}")
            conv, bn = self._conv(k, f, s, g, f"conv{i}"), self._bn(f"bn{i}")
            if self.preactivation:
                bn.build(shape)
                conv.build(shape)
            else:
                conv.build(shape)
                bn.build(conv.compute_output_shape(shape))
            shape = conv.compute_output_shape(shape)
            self.convs.append(conv)
            self.bns.append(bn)
        # One activation per conv: pre-activation puts one before each conv; post-activation
        # one after each conv but the last, plus one on the block output.
        self.acts = [_activation_layer(self.activation, f"act{i}", self.dtype_policy)
                     for i in range(1, len(specs) + 1)]
        for act, act_shape in zip(self.acts, self._activation_shapes(input_shape)):
            act.build(act_shape)
        self.needs_projection = self.strides != 1 or channels != self.out_channels
        self.shortcut_conv = self.shortcut_bn = None
        if self.needs_projection:
            self.shortcut_conv = self._conv(1, self.out_channels, self.strides, 1,
                                            "shortcut_conv")
            self.shortcut_conv.build(tuple(input_shape))
            if not self.preactivation:
                self.shortcut_bn = self._bn("shortcut_bn")
                self.shortcut_bn.build(self.compute_output_shape(input_shape))
        self.dropout = None
        if self.dropout_rate > 0.0:
            self.dropout = keras.layers.Dropout(self.dropout_rate, seed=self.seed,
                                                name="dropout")
        self.stochastic_depth = None
        if self.survival_probability < 1.0:
            # A different seed from the dropout's keeps the two draws independent.
            seed = None if self.seed is None else self.seed + 1
            self.stochastic_depth = StochasticDepth(self.survival_probability, seed=seed,
                                                    name="stochastic_depth",
                                                    dtype=self.dtype_policy)
        self.built = True

    def _activation_shapes(self, input_shape):
        """Input shapes of act1.. (pre: each conv's input; post: after bn1.., then output)."""
        shapes, shape = [], tuple(input_shape)
        for conv in self.convs:
            if self.preactivation:
                shapes.append(shape)
            shape = conv.compute_output_shape(shape)
            if not self.preactivation:
                shapes.append(shape)
        return shapes

    def call(self, inputs, training=None):
        x = ops.cast(inputs, self.compute_dtype)
        last = len(self.convs) - 1
        if self.preactivation:
            pre = self.acts[0](self.bns[0](x, training=training))
            shortcut = self.shortcut_conv(pre) if self.needs_projection else x
            y = pre
            for i, conv in enumerate(self.convs):
                if i > 0:
                    y = self.acts[i](self.bns[i](y, training=training))
                if i == last and self.dropout is not None:
                    y = self.dropout(y, training=training)
                y = conv(y)
        else:
            shortcut = x
            if self.needs_projection:
                shortcut = self.shortcut_bn(self.shortcut_conv(x), training=training)
            y = x
            for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
                if i == last and self.dropout is not None:
                    y = self.dropout(y, training=training)
                y = bn(conv(y), training=training)
                if i < last:
                    y = self.acts[i](y)
        if self.stochastic_depth is not None:
            y = self.stochastic_depth([shortcut, y], training=training)
        else:
            y = shortcut + y
        return y if self.preactivation else self.acts[-1](y)

    def compute_output_shape(self, input_shape):
        height, width = input_shape[1], input_shape[2]
        s = self.strides
        return (input_shape[0], None if height is None else -(-height // s),
                None if width is None else -(-width // s), self.out_channels)

    def get_config(self):
        config = super().get_config()
        ser = keras.saving.serialize_keras_object
        config.update({"filters": self.filters, "bottleneck": self.bottleneck,
                       "preactivation": self.preactivation, "strides": self.strides,
                       "expansion": self.expansion, "groups": self.groups,
                       "activation": self.activation, "dropout_rate": self.dropout_rate,
                       "survival_probability": self.survival_probability,
                       "kernel_initializer": ser(self.kernel_initializer),
                       "kernel_regularizer": ser(self.kernel_regularizer),
                       "bn_momentum": self.bn_momentum, "bn_epsilon": self.bn_epsilon,
                       "seed": self.seed})
        return config


class _DenseUnit(keras.layers.Layer):
    """One DenseNet layer: [BN-act-conv1x1(width·k)-drop]-BN-act-conv3x3(k)-drop (internal)."""

    def __init__(self, block, **kwargs):
        super().__init__(dtype=block.dtype_policy, **kwargs)
        k = block.growth_rate
        self.stages = []
        if block.bottleneck:
            self.stages.append(("1", 1, block.bottleneck_width * k))
        self.stages.append(("2", 3, k))
        self.bns, self.acts, self.convs = [], [], []
        for tag, kernel, filters in self.stages:
            self.bns.append(keras.layers.BatchNormalization(
                momentum=block.bn_momentum, epsilon=block.bn_epsilon, name=f"bn{tag}",
                dtype=block.dtype_policy))
            self.acts.append(_activation_layer(block.activation, f"act{tag}",
                                               block.dtype_policy))
            self.convs.append(keras.layers.Conv2D(
                filters, kernel, padding="same", use_bias=False, name=f"conv{tag}",
                kernel_initializer=block.kernel_initializer,
                kernel_regularizer=block.kernel_regularizer, dtype=block.dtype_policy))
        self.dropout = None
        if block.dropout_rate > 0.0:
            self.dropout = keras.layers.Dropout(block.dropout_rate, seed=block.seed,
                                                name="dropout")

    def build(self, input_shape):
        shape = tuple(input_shape)
        for bn, act, conv in zip(self.bns, self.acts, self.convs):
            bn.build(shape)
            act.build(shape)
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
        self.built = True

    def call(self, x, training=None):
        for bn, act, conv in zip(self.bns, self.acts, self.convs):
            x = conv(act(bn(x, training=training)))
            if self.dropout is not None:
                x = self.dropout(x, training=training)
        return x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.convs[-1].filters,)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class DenseBlock(keras.layers.Layer):
    """DenseNet block: ``x_l = H_l([x_0, x_1, ..., x_{l-1}])``, outputs concatenated.

    Survey S0 §3.6.5 (Huang et al.; SEED_CHECKLIST S-09): each of the ``num_layers`` layers
    sees the concatenation of the block input and all earlier layers' outputs and adds
    ``growth_rate`` (k) channels. ``H_l`` = BN-act-conv1x1(``bottleneck_width``·k)-BN-act-
    conv3x3(k) with ``bottleneck=True`` (DenseNet-B), else BN-act-conv3x3(k); optional
    dropout after each conv. Output: ``C + num_layers·k`` channels, the first C of which are
    the input unchanged. Deterministic at inference (BN moving statistics, no dropout).
    Sub-layers ``layer1..layerN``, each with ``bn1/conv1`` (bottleneck) and ``bn2/conv2``.

    Args:
        num_layers: number of layers L in the block.
        growth_rate: k, channels added by each layer.
        bottleneck: use the 1x1 bottleneck (DenseNet-B).
        bottleneck_width: the 1x1 conv has ``bottleneck_width · k`` filters (4 in the paper).
        dropout_rate: dropout after each conv, in [0, 1).
        activation: a shape-preserving activation name (default relu).
        kernel_initializer, kernel_regularizer, bn_momentum, bn_epsilon: of the sub-layers.
        seed: seed of the dropout generators.

    Example:
        >>> block = DenseBlock(num_layers=6, growth_rate=32)
        >>> block(keras.ops.ones((2, 8, 8, 64))).shape                # 64 + 6·32
        (2, 8, 8, 256)
    """

    def __init__(self, num_layers, growth_rate, bottleneck=True, bottleneck_width=4,
                 dropout_rate=0.0, activation="relu", kernel_initializer="he_normal",
                 kernel_regularizer=None, bn_momentum=0.9, bn_epsilon=1e-5, seed=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.num_layers = _positive_int(num_layers, "num_layers")
        self.growth_rate = _positive_int(growth_rate, "growth_rate")
        self.bottleneck = bool(bottleneck)
        self.bottleneck_width = _positive_int(bottleneck_width, "bottleneck_width")
        self.dropout_rate = float(dropout_rate)
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1), got {dropout_rate}")
        self.activation = _check_activation(activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bn_momentum = float(bn_momentum)
        self.bn_epsilon = float(bn_epsilon)
        self.seed = seed
        self.dense_layers = [_DenseUnit(self, name=f"layer{i + 1}")
                             for i in range(self.num_layers)]

    def build(self, input_shape):
        _check_rank4(self, input_shape)
        shape = tuple(input_shape)
        for unit in self.dense_layers:
            unit.build(shape)
            shape = shape[:-1] + (shape[-1] + self.growth_rate,)
        self.built = True

    def call(self, inputs, training=None):
        x = ops.cast(inputs, self.compute_dtype)
        for unit in self.dense_layers:
            x = ops.concatenate([x, unit(x, training=training)], axis=-1)
        return x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (input_shape[-1] + self.num_layers * self.growth_rate,)

    def get_config(self):
        config = super().get_config()
        ser = keras.saving.serialize_keras_object
        config.update({"num_layers": self.num_layers, "growth_rate": self.growth_rate,
                       "bottleneck": self.bottleneck, "bottleneck_width": self.bottleneck_width,
                       "dropout_rate": self.dropout_rate, "activation": self.activation,
                       "kernel_initializer": ser(self.kernel_initializer),
                       "kernel_regularizer": ser(self.kernel_regularizer),
                       "bn_momentum": self.bn_momentum, "bn_epsilon": self.bn_epsilon,
                       "seed": self.seed})
        return config
