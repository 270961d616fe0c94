"""Low-precision and dictionary-decoded layers (survey S0 §4.3, §4.5; SEED_CHECKLIST §12).

* :class:`BinaryDense`, :class:`BinaryConv2D` - binarized / low-bit layers with three modes:
  ``bnn`` (Courbariaux et al., F-14: sign weights and sign inputs), ``xnor`` (XNOR-Net,
  Rastegari et al., F-12: sign weights times a per-output-filter scale ``α = mean|W|``, sign
  inputs) and ``dorefa`` (DoReFa-Net, Zhou et al., F-13: ``k``-bit weights and inputs);
* :class:`LookupConv2D` - LCNN (Bagherinezhad et al., F-26): each filter is decoded from a
  layer-shared dictionary with a few (index, coefficient) pairs per spatial position;
* :func:`sign_ste`, :func:`quantize_ste` - the straight-through estimators used above.

Conventions (documented choices): ``sign(0) = +1``; rounding is round-half-to-even (as
``numpy.round``); the straight-through estimator (STE) of ``sign`` has gradient
``1_{|x| ≤ 1}`` (the "hard tanh" STE of Courbariaux et al.), the STE of rounding has gradient
1. The quantizers act on the layer's INPUT (binarize the activations of the previous layer)
and on its kernel; the bias stays full precision. The first layer of a network usually keeps
``quantize_inputs=False`` (real-valued pixels), as in the papers.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops
from cnn_apps.layers._validation import positive_int as _positive_int, int_pair as _int_pair

__all__ = ["BinaryDense", "BinaryConv2D", "LookupConv2D", "sign_ste", "quantize_ste",
           "BINARY_MODES"]

_PACKAGE = "cnn_apps"
BINARY_MODES = ("bnn", "xnor", "dorefa")


def _padding(padding):
    padding = str(padding).lower()
    if padding not in ("valid", "same"):
        raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")
    return padding


def sign_ste(x):
    """``sign(x)`` with ``sign(0) = +1`` in the forward pass; gradient ``1_{|x| ≤ 1}``."""
    clipped = ops.clip(x, -1.0, 1.0)
    hard = ops.where(x >= 0, ops.ones_like(x), -ops.ones_like(x))
    return clipped + ops.stop_gradient(hard - clipped)


def quantize_ste(x, bits):
    """DoReFa ``quantize_k(x) = round((2^k − 1)·x) / (2^k − 1)`` for ``x ∈ [0, 1]``; gradient 1."""
    levels = float(2 ** int(bits) - 1)
    scaled = x * levels
    return (scaled + ops.stop_gradient(ops.round(scaled) - scaled)) / levels


def _conv_output_shape(input_shape, kernel_size, strides, padding, dilation_rate, filters):
    shape = list(input_shape)
    for i, axis in enumerate((1, 2)):
        size = shape[axis]
        if size is not None:
            span = (kernel_size[i] - 1) * dilation_rate[i] + 1
            size = ((size - span) // strides[i] + 1 if padding == "valid"
                    else -(-size // strides[i]))
        shape[axis] = size
    shape[-1] = filters
    return tuple(shape)


class _BinaryBase(keras.layers.Layer):
    """Shared quantizers, weights and config of BinaryDense / BinaryConv2D."""

    def _init_binary(self, mode, bits, activation_bits, quantize_inputs, activation, use_bias,
                     kernel_initializer, bias_initializer, kernel_constraint):
        mode = str(mode).lower()
        if mode not in BINARY_MODES:
            raise ValueError(f"mode must be one of {BINARY_MODES}, got {mode!r}")
        self.mode = mode
        self.bits = _positive_int(bits, "bits")
        if mode != "dorefa" and self.bits != 1:
            raise ValueError(f"bits must be 1 for mode {mode!r} (only 'dorefa' has k-bit "
                             f"weights), got {bits}")
        if self.bits > 16:
            raise ValueError(f"bits must be at most 16, got {bits}")
        if activation_bits is not None:
            activation_bits = _positive_int(activation_bits, "activation_bits")
            if mode != "dorefa" and activation_bits != 1:
                raise ValueError(f"activation_bits must be 1 (or None) for mode {mode!r}, "
                                 f"got {activation_bits}")
            if activation_bits > 16:
                raise ValueError(f"activation_bits must be at most 16, got {activation_bits}")
        self.activation_bits = activation_bits
        self.quantize_inputs = bool(quantize_inputs)
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)

    def _add_weights(self, kernel_shape, units):
        self.kernel = self.add_weight(name="kernel", shape=kernel_shape,
                                      initializer=self.kernel_initializer,
                                      constraint=self.kernel_constraint)
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(units,),
                                        initializer=self.bias_initializer)

    def quantized_kernel(self):
        """The kernel the layer multiplies with (compute dtype), STE gradients attached."""
        w = ops.cast(self.kernel, self.compute_dtype)
        reduce_axes = tuple(range(len(w.shape) - 1))   # all but the output-filter axis
        if self.mode == "bnn":
            return sign_ste(w)
        if self.mode == "xnor":
            alpha = ops.mean(ops.abs(w), axis=reduce_axes, keepdims=True)
            return alpha * sign_ste(w)
        if self.bits == 1:   # DoReFa 1-bit weights: E(|W|)·sign(W), one scalar per layer
            return ops.mean(ops.abs(w)) * sign_ste(w)
        t = ops.tanh(w)
        t = t / (2.0 * ops.max(ops.abs(t))) + 0.5
        return 2.0 * quantize_ste(t, self.bits) - 1.0

    def quantized_inputs(self, x):
        if not self.quantize_inputs:
            return x
        if self.mode == "dorefa":
            bits = self.activation_bits or self.bits
            return quantize_ste(ops.clip(x, 0.0, 1.0), bits)
        return sign_ste(x)

    def _finish(self, y):
        if self.use_bias:
            y = y + ops.cast(self.bias, y.dtype)
        return self.activation(y)

    def _binary_config(self):
        ser = keras.saving.serialize_keras_object
        return {"mode": self.mode, "bits": self.bits, "activation_bits": self.activation_bits,
                "quantize_inputs": self.quantize_inputs,
                "activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias, "kernel_initializer": ser(self.kernel_initializer),
                "bias_initializer": ser(self.bias_initializer),
                "kernel_constraint": ser(self.kernel_constraint)}


_BINARY_DOC = """
    Modes (``W`` the real kernel kept for training, ``x`` the layer input):

    * ``"bnn"``: ``W_b = sign(W)``, ``x_b = sign(x)``;
    * ``"xnor"``: ``W_b = α_o·sign(W)`` with ``α_o = mean|W[..., o]|`` per output filter
      (XNOR-Net's ``α = ‖W‖₁/n``), ``x_b = sign(x)`` (the input scale ``K`` is not used);
    * ``"dorefa"``: ``bits = k > 1``: ``W_b = 2·quantize_k(tanh(W)/(2·max|tanh W|) + ½) − 1``;
      ``k = 1``: ``W_b = mean|W|·sign(W)``; ``x_b = quantize_{k_a}(clip(x, 0, 1))`` with
      ``k_a = activation_bits`` (default ``bits``) and
      ``quantize_k(r) = round((2^k − 1)·r)/(2^k − 1)``.

    ``sign(0) = +1``. Gradients are straight-through: ``∂sign(x)/∂x := 1_{|x| ≤ 1}``,
    ``∂round(x)/∂x := 1``; the XNOR and DoReFa scales are differentiated normally. Training
    and inference compute the same quantized function (the real kernel is only the training
    state; ``quantized_kernel()`` returns the deployed one). BNN training usually clips the real
    weights to [-1, 1] after each update: pass such a ``kernel_constraint``.
"""


@keras.saving.register_keras_serializable(package=_PACKAGE)
class BinaryDense(_BinaryBase):
    __doc__ = """Binarized / low-bit dense layer: ``y = a(x_b · W_b + b)``.

    Survey S0 §4.3 (SEED_CHECKLIST F-10, F-12, F-13, F-14).
""" + _BINARY_DOC + """
    Args:
        units: output size.
        mode: ``"bnn"``, ``"xnor"`` or ``"dorefa"``.
        bits: weight bits (1 for bnn/xnor; 1..16 for dorefa).
        activation_bits: input bits for dorefa (default ``bits``).
        quantize_inputs: quantize the layer input (False for a first layer on raw pixels).
        activation, use_bias, kernel_initializer, bias_initializer, kernel_constraint: as Dense.

    Example:
        >>> layer = BinaryDense(10, mode="xnor")
        >>> layer(keras.ops.ones((2, 84))).shape
        (2, 10)
    """

    def __init__(self, units, mode="xnor", bits=1, activation_bits=None, quantize_inputs=True,
                 activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_constraint=None, **kwargs):
        super().__init__(**kwargs)
        self.units = _positive_int(units, "units")
        self._init_binary(mode, bits, activation_bits, quantize_inputs, activation, use_bias,
                          kernel_initializer, bias_initializer, kernel_constraint)

    def build(self, input_shape):
        if input_shape[-1] is None:
            raise ValueError("BinaryDense needs a known last input dimension, got None")
        self._add_weights((int(input_shape[-1]), self.units), self.units)
        self.built = True

    def call(self, inputs):
        x = self.quantized_inputs(ops.cast(inputs, self.compute_dtype))
        return self._finish(ops.matmul(x, self.quantized_kernel()))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        config = super().get_config()
        config.update({"units": self.units, **self._binary_config()})
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class BinaryConv2D(_BinaryBase):
    __doc__ = """Binarized / low-bit 2-D convolution: ``y = a(conv(x_b, W_b) + b)``.

    Survey S0 §4.3 (SEED_CHECKLIST F-10, F-12, F-13, F-14). Channels-last, Keras kernel layout
    ``(kh, kw, C, filters)``; the XNOR scale ``α_o`` is the mean of ``|W|`` over
    ``(kh, kw, C)`` for each filter ``o``. ``"same"`` padding pads the quantized input with
    zeros (as the binary-conv papers' implementations do).
""" + _BINARY_DOC + """
    Args:
        filters, kernel_size, strides, padding, dilation_rate: as in Conv2D.
        mode, bits, activation_bits, quantize_inputs: see above.
        activation, use_bias, kernel_initializer, bias_initializer, kernel_constraint: as
            in Conv2D.

    Example:
        >>> layer = BinaryConv2D(16, 5, mode="xnor", padding="same")
        >>> layer(keras.ops.ones((2, 14, 14, 6))).shape
        (2, 14, 14, 16)
    """

    def __init__(self, filters, kernel_size, mode="xnor", bits=1, activation_bits=None,
                 quantize_inputs=True, strides=1, padding="valid", dilation_rate=1,
                 activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_constraint=None, **kwargs):
        super().__init__(**kwargs)
        self.filters = _positive_int(filters, "filters")
        self.kernel_size = _int_pair(kernel_size, "kernel_size")
        self.strides = _int_pair(strides, "strides")
        self.dilation_rate = _int_pair(dilation_rate, "dilation_rate")
        self.padding = _padding(padding)
        self._init_binary(mode, bits, activation_bits, quantize_inputs, activation, use_bias,
                          kernel_initializer, bias_initializer, kernel_constraint)

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ValueError(f"BinaryConv2D expects (batch, H, W, C) with known C, got "
                             f"{input_shape}")
        self._add_weights(self.kernel_size + (int(input_shape[-1]), self.filters), self.filters)
        self.built = True

    def call(self, inputs):
        x = self.quantized_inputs(ops.cast(inputs, self.compute_dtype))
        y = ops.conv(x, self.quantized_kernel(), strides=self.strides, padding=self.padding,
                     data_format="channels_last", dilation_rate=self.dilation_rate)
        return self._finish(y)

    def compute_output_shape(self, input_shape):
        return _conv_output_shape(input_shape, self.kernel_size, self.strides, self.padding,
                                  self.dilation_rate, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update({"filters": self.filters, "kernel_size": self.kernel_size,
                       "strides": self.strides, "padding": self.padding,
                       "dilation_rate": self.dilation_rate, **self._binary_config()})
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LookupConv2D(keras.layers.Layer):
    """Lookup-based convolution (LCNN): ``y = a(conv(x, K) + b)`` with the kernel decoded as
    ``K[u, v, :, o] = Σ_{t<T} C[u, v, t, o] · D[I[u, v, t, o], :]``.

    Survey S0 §4.5 (Bagherinezhad et al. 2017; SEED_CHECKLIST F-26): every spatial position
    ``(u, v)`` of every filter ``o`` is a sparse combination of ``T = sparsity`` rows of a
    layer-shared dictionary ``D`` of ``dictionary_size`` vectors over the input channels.
    Stored: ``D`` (``dictionary_size × C``, trainable), coefficients ``C`` (trainable) and
    lookup indices ``I`` (an int32 non-trainable weight, drawn from ``seed`` at build time or
    set by a compression routine, e.g. from a sparse coding of a trained kernel). Training
    updates the dictionary and coefficients (the paper's index re-selection is done outside
    the layer); inference is the same decoded convolution.

    Args:
        filters, kernel_size, strides, padding, dilation_rate: as in Conv2D.
        dictionary_size: number of dictionary vectors ``k``.
        sparsity: ``T``, the number of (index, coefficient) pairs per filter position.
        seed: integer seed of the initial indices.
        activation, use_bias, bias_initializer: as in Conv2D.
        dictionary_initializer, coefficient_initializer: default normal with std
            ``1/sqrt(C)`` and ``sqrt(2·C/(T·(fan_in + fan_out)))``, so the decoded kernel has
            Glorot variance.

    Weights: ``dictionary``, ``coefficients``, ``bias`` (trainable), ``indices``.

    Example:
        >>> layer = LookupConv2D(32, 3, dictionary_size=16, sparsity=2, padding="same")
        >>> layer(keras.ops.ones((2, 16, 16, 8))).shape
        (2, 16, 16, 32)
    """

    def __init__(self, filters, kernel_size, dictionary_size, sparsity=2, strides=1,
                 padding="valid", dilation_rate=1, activation=None, use_bias=True,
                 dictionary_initializer=None, coefficient_initializer=None,
                 bias_initializer="zeros", seed=0, **kwargs):
        super().__init__(**kwargs)
        self.filters = _positive_int(filters, "filters")
        self.kernel_size = _int_pair(kernel_size, "kernel_size")
        self.dictionary_size = _positive_int(dictionary_size, "dictionary_size")
        self.sparsity = _positive_int(sparsity, "sparsity")
        self.strides = _int_pair(strides, "strides")
        self.dilation_rate = _int_pair(dilation_rate, "dilation_rate")
        self.padding = _padding(padding)
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.dictionary_initializer = (keras.initializers.get(dictionary_initializer)
                                       if dictionary_initializer is not None else None)
        self.coefficient_initializer = (keras.initializers.get(coefficient_initializer)
                                        if coefficient_initializer is not None else None)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.seed = None if seed is None else int(seed)

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ValueError(f"LookupConv2D expects (batch, H, W, C) with known C, got "
                             f"{input_shape}")
        channels = int(input_shape[-1])
        kh, kw = self.kernel_size
        fan_in, fan_out = kh * kw * channels, kh * kw * self.filters
        dict_init = self.dictionary_initializer or keras.initializers.RandomNormal(
            stddev=1.0 / math.sqrt(channels))
        coef_init = self.coefficient_initializer or keras.initializers.RandomNormal(
            stddev=math.sqrt(2.0 * channels / (self.sparsity * (fan_in + fan_out))))
        self.dictionary = self.add_weight(name="dictionary",
                                          shape=(self.dictionary_size, channels),
                                          initializer=dict_init)
        lookup_shape = (kh, kw, self.sparsity, self.filters)
        self.coefficients = self.add_weight(name="coefficients", shape=lookup_shape,
                                            initializer=coef_init)
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(self.filters,),
                                        initializer=self.bias_initializer)
        self.indices = self.add_weight(name="indices", shape=lookup_shape, dtype="int32",
                                       initializer="zeros", trainable=False)
        rng = np.random.default_rng(self.seed)
        self.indices.assign(rng.integers(0, self.dictionary_size, size=lookup_shape)
                            .astype("int32"))
        self.built = True

    def decoded_kernel(self):
        """The ``(kh, kw, C, filters)`` kernel ``Σ_t C_t · D[I_t]`` in the compute dtype."""
        rows = ops.take(ops.cast(self.dictionary, self.compute_dtype), self.indices, axis=0)
        return ops.einsum("uvto,uvtoc->uvco", ops.cast(self.coefficients, self.compute_dtype),
                          rows)

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        y = ops.conv(x, self.decoded_kernel(), strides=self.strides, padding=self.padding,
                     data_format="channels_last", dilation_rate=self.dilation_rate)
        if self.use_bias:
            y = y + ops.cast(self.bias, y.dtype)
        return self.activation(y)

    def compute_output_shape(self, input_shape):
        return _conv_output_shape(input_shape, self.kernel_size, self.strides, self.padding,
                                  self.dilation_rate, self.filters)

    def get_config(self):
        config = super().get_config()
        ser = keras.saving.serialize_keras_object
        config.update({"filters": self.filters, "kernel_size": self.kernel_size,
                       "dictionary_size": self.dictionary_size, "sparsity": self.sparsity,
                       "strides": self.strides, "padding": self.padding,
                       "dilation_rate": self.dilation_rate,
                       "activation": keras.activations.serialize(self.activation),
                       "use_bias": self.use_bias,
                       "dictionary_initializer": ser(self.dictionary_initializer),
                       "coefficient_initializer": ser(self.coefficient_initializer),
                       "bias_initializer": ser(self.bias_initializer), "seed": self.seed})
        return config
