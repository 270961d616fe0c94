"""Convolution variants (survey S0 §3.1; SEED_CHECKLIST §3 V-01, V-05, V-10, V-11, V-15, C-07, C-10).

All layers are channels-last and written with ``keras.ops`` only. Transposed and dilated
convolution (V-02, V-03) are Keras' own ``Conv2DTranspose`` / ``Conv2D(dilation_rate=...)``.
``receptive_field`` gives the receptive field and jump of a stack of conv/pool layers.
"""

from __future__ import annotations

import collections
import math

import keras
import numpy as np
from keras import ops
from cnn_apps.layers._validation import positive_int as _positive_int

__all__ = ["TiledConv2D", "LocallyConnected2D", "MLPConv2D", "DeformableConv2D",
           "SpaceToDepthConv2D", "BlurPool2D", "space_to_depth", "receptive_field",
           "ReceptiveField"]

_register = keras.saving.register_keras_serializable(package="cnn_apps")


# ----------------------------------------------------------------------------- validation


def _int_tuple(value, rank, name):
    """``3`` or ``(3, 3)`` -> ``(3, 3)``; anything else is a ValueError naming ``name``."""
    values = (value,) * rank if isinstance(value, (int, np.integer)) else value
    try:
        values = tuple(values)
    except TypeError:
        values = ()
    if len(values) != rank or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in values):
        raise ValueError(f"`{name}` must be a positive int or a tuple of {rank} positive ints, "
                         f"got {value!r}")
    return tuple(int(v) for v in values)


def _choice(value, allowed, name):
    key = value.lower() if isinstance(value, str) else value
    if key not in allowed:
        raise ValueError(f"`{name}` must be one of {list(allowed)}, got {value!r}")
    return key


def _conv_size(size, k_eff, stride, padding):
    """(output size, pad before, pad after) of one axis; "same"/"causal": TF/Keras convention."""
    if size is None:
        return None, None, None
    if padding == "valid":
        return (size - k_eff) // stride + 1, 0, 0
    out = -(-size // stride)
    total = max((out - 1) * stride + k_eff - size, 0)
    return out, total // 2, total - total // 2


def _same_pad_before(size, k_eff, stride):
    """Pad-before of 'same' padding; ``size`` may be a dynamic (tensor) dimension."""
    total = ((size + stride - 1) // stride - 1) * stride + k_eff - size
    if isinstance(total, (int, np.integer)):
        return max(int(total), 0) // 2
    return ops.maximum(total, 0) // 2


class _ConvBase(keras.layers.Layer):
    """Shared argument handling and config of the custom convolutions (not public)."""

    _rank = 2
    _paddings = ("valid", "same")

    def __init__(self, filters, kernel_size, strides=1, padding="valid", activation=None,
                 use_bias=True, kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, bias_regularizer=None, kernel_constraint=None,
                 bias_constraint=None, **kwargs):
        super().__init__(**kwargs)
        self.filters = self._check_filters(filters)
        self.kernel_size = _int_tuple(kernel_size, self._rank, "kernel_size")
        self.strides = _int_tuple(strides, self._rank, "strides")
        self.padding = _choice(padding, self._paddings, "padding")
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)

    def _check_filters(self, filters):
        return _positive_int(filters, "filters")

    def _channels(self, input_shape):
        channels = input_shape[-1]
        if len(input_shape) != self._rank + 2 or channels is None:
            raise ValueError(f"{type(self).__name__} expects a {self._rank + 2}-D channels-last "
                             f"input with a known channel count, got shape {input_shape}")
        return int(channels)

    def _kernel(self, shape, name="kernel", initializer=None, regularize=True):
        return self.add_weight(
            name=name, shape=shape, initializer=initializer or self.kernel_initializer,
            regularizer=self.kernel_regularizer if regularize else None,
            constraint=self.kernel_constraint if regularize else None)

    def _bias(self, shape, name="bias", initializer=None):
        return self.add_weight(name=name, shape=shape,
                               initializer=initializer or self.bias_initializer,
                               regularizer=self.bias_regularizer, constraint=self.bias_constraint)

    def compute_output_shape(self, input_shape):
        dilation = getattr(self, "dilation_rate", (1,) * self._rank)
        dims = [_conv_size(input_shape[1 + a], (self.kernel_size[a] - 1) * dilation[a] + 1,
                           self.strides[a], self.padding)[0] for a in range(self._rank)]
        filters = self.filters[-1] if isinstance(self.filters, list) else self.filters
        return (input_shape[0], *dims, filters)

    def get_config(self):
        config = super().get_config()
        ser = keras.saving.serialize_keras_object
        config.update(
            filters=self.filters, kernel_size=self.kernel_size, strides=self.strides,
            padding=self.padding, activation=keras.activations.serialize(self.activation),
            use_bias=self.use_bias, kernel_initializer=ser(self.kernel_initializer),
            bias_initializer=ser(self.bias_initializer),
            kernel_regularizer=ser(self.kernel_regularizer),
            bias_regularizer=ser(self.bias_regularizer),
            kernel_constraint=ser(self.kernel_constraint),
            bias_constraint=ser(self.bias_constraint))
        return config


# ----------------------------------------------------------------------------- tiled conv
@_register
class TiledConv2D(_ConvBase):
    """Tiled convolution: weights untied inside a k x k tile (Le et al. 2010; survey S0 §3.1.1, V-01).

    ``y[i, j, f] = act(sum_{u,v,c} W[i mod k, j mod k][u, v, c, f] x[i*s+u, j*s+v, c]
    + b[i mod k, j mod k, f])``: output position (i, j) uses weight bank (i mod k, j mod k),
    k = ``tile_size``; k = 1 is an ordinary ``Conv2D``. The seed reports k = 2 as best on NORB
    and CIFAR-10. Weights: ``kernel`` (k, k, kh, kw, in, filters), ``bias`` (k, k, filters).

    Args: ``filters`` output channels; ``kernel_size``, ``strides`` int or pair; ``tile_size``
    k; ``padding`` "valid" | "same"; the usual activation/initializer/regularizer/constraint
    arguments. Deterministic; training and inference are identical; any spatial size works.

    Cost: the k*k banks run as one convolution of stride k*s whose kernel, ((k-1)*s + kh)
    wide, holds each bank at its offset, followed by a depth-to-space interleave; that is
    ((k-1)*s + kh)^2 / kh^2 times a Conv2D's multiplies (1.8x for k = 2, 3x3, stride 1).

    Example:
        layer = TiledConv2D(16, 3, tile_size=2, padding="same")
        y = layer(keras.random.normal((2, 8, 8, 3)))  # (2, 8, 8, 16)
    """

    def __init__(self, filters, kernel_size, tile_size=2, strides=1, padding="valid", **kwargs):
        super().__init__(filters, kernel_size, strides=strides, padding=padding, **kwargs)
        self.tile_size = _positive_int(tile_size, "tile_size")

    def build(self, input_shape):
        channels = self._channels(input_shape)
        k = self.tile_size
        self.kernel = self._kernel((k, k) + self.kernel_size + (channels, self.filters))
        self.bias = self._bias((k, k, self.filters)) if self.use_bias else None

    def call(self, inputs):
        k, f = self.tile_size, self.filters
        (kh, kw), (sh, sw) = self.kernel_size, self.strides
        bias = ops.reshape(self.bias, (k * k * f,)) if self.use_bias else None
        if k == 1:
            y = ops.conv(inputs, ops.reshape(self.kernel, (kh, kw, -1, f)), strides=self.strides,
                         padding=self.padding)
            return self.activation(y if bias is None else y + bias)
        # Bank (a, b) serves outputs (k*I + a, k*J + b): zero-pad its kernel by (a*sh, b*sw) so
        # one conv with stride k*s computes every bank for a k x k block of outputs at once.
        kernel = ops.concatenate(
            [ops.pad(self.kernel[a, b], ((a * sh, (k - 1 - a) * sh), (b * sw, (k - 1 - b) * sw),
                                         (0, 0), (0, 0)))
             for a in range(k) for b in range(k)], axis=-1)
        shape = ops.shape(inputs)
        pads, outs = [], []
        for size, kernel_len, stride in ((shape[1], kh, sh), (shape[2], kw, sw)):
            if self.padding == "same":
                out, before = (size + stride - 1) // stride, \
                    _same_pad_before(size, kernel_len, stride)
            else:
                out, before = (size - kernel_len) // stride + 1, 0
            # Pad the end so that ceil(out / k) whole blocks fit (extra rows are cropped below).
            needed = (k * ((out + k - 1) // k) - 1) * stride + kernel_len - size - before
            after = max(needed, 0) if isinstance(needed, (int, np.integer)) else \
                ops.maximum(needed, 0)
            pads.append((before, after))
            outs.append(out)
        x = ops.pad(inputs, ((0, 0), pads[0], pads[1], (0, 0)))
        y = ops.conv(x, kernel, strides=(k * sh, k * sw), padding="valid")
        if bias is not None:
            y = y + bias
        blocks = ops.shape(y)
        y = ops.reshape(y, (-1, blocks[1], blocks[2], k, k, f))
        y = ops.reshape(ops.transpose(y, (0, 1, 3, 2, 4, 5)),
                        (-1, blocks[1] * k, blocks[2] * k, f))
        return self.activation(y[:, :outs[0], :outs[1], :])

    def get_config(self):
        return {**super().get_config(), "tile_size": self.tile_size}


# ----------------------------------------------------------------------------- locally connected
@_register
class LocallyConnected2D(_ConvBase):
    """Locally connected 2-D layer: a convolution with unshared weights (C-10; S3/S4).

    ``y[i, j, f] = act(sum_{u,v,c} W[i, j, u, v, c, f] x[i*s+u, j*s+v, c] + b[i, j, f])``.
    Every output position has its own filter bank (for inputs with centred structure such as
    aligned faces); Keras 3 dropped its built-in. Needs a static spatial input size. Weights:
    ``kernel`` (out_h, out_w, kh, kw, in, filters), ``bias`` (out_h, out_w, filters).

    Args: ``filters``, ``kernel_size``, ``strides``, ``padding`` ("valid" | "same", zero
    padding as in Conv2D) and the usual activation/initializer/regularizer arguments.
    Deterministic; training and inference are identical.

    Cost: patches come from kh*kw strided slices and are contracted per position by a batched
    matmul. The layer holds out_h*out_w times a Conv2D's weights and uses each weight once per
    example, so it is memory-bound and several times slower than Conv2D (5-10x at 32x32).

    Example:
        layer = LocallyConnected2D(8, 3)
        y = layer(keras.random.normal((2, 10, 10, 3)))  # (2, 8, 8, 8)
    """

    def build(self, input_shape):
        channels = self._channels(input_shape)
        if input_shape[1] is None or input_shape[2] is None:
            raise ValueError("LocallyConnected2D needs a static spatial input size, got input "
                             f"shape {input_shape}")
        self._geometry = [_conv_size(input_shape[1 + a], self.kernel_size[a], self.strides[a],
                                     self.padding) for a in range(2)]
        if min(g[0] for g in self._geometry) < 1:
            raise ValueError(f"LocallyConnected2D: input {input_shape[1:3]} is smaller than "
                             f"kernel_size {self.kernel_size}")
        out_h, out_w = self._geometry[0][0], self._geometry[1][0]
        self.kernel = self._kernel((out_h, out_w) + self.kernel_size + (channels, self.filters))
        self.bias = self._bias((out_h, out_w, self.filters)) if self.use_bias else None

    def call(self, inputs):
        (out_h, top, bottom), (out_w, left, right) = self._geometry
        x = inputs
        if self.padding == "same":
            x = ops.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
        sh, sw = self.strides
        kh, kw = self.kernel_size
        patches = [x[:, u:u + (out_h - 1) * sh + 1:sh, v:v + (out_w - 1) * sw + 1:sw, :]
                   for u in range(kh) for v in range(kw)]
        patches = ops.reshape(ops.stack(patches, axis=3), (-1, out_h * out_w, kh * kw * x.shape[-1]))
        kernel = ops.reshape(self.kernel, (out_h * out_w, -1, self.filters))
        # Position-major batched matmul: (P, B, K) @ (P, K, F); about 2x faster than an einsum.
        y = ops.matmul(ops.transpose(patches, (1, 0, 2)), kernel)
        y = ops.reshape(ops.transpose(y, (1, 0, 2)), (-1, out_h, out_w, self.filters))
        if self.use_bias:
            y = y + self.bias
        return self.activation(y)


# ----------------------------------------------------------------------------- mlpconv
@_register
class MLPConv2D(_ConvBase):
    """mlpconv layer of Network in Network (Lin et al. 2014; survey S0 §3.1.4, V-05).

    ``a^1 = act(W_1 * x + b_1)`` (a ``kernel_size`` convolution), then
    ``a^n_{i,j,:} = act(W_n^T a^{n-1}_{i,j,:} + b_n)`` for n = 2..N: 1x1 convolutions, i.e.
    "cascaded cross-channel parametric pooling"; act = ReLU in the paper.

    Args: ``filters`` list [f_1, ..., f_N] of output channels per micro-MLP layer (N >= 1);
    ``kernel_size``, ``strides``, ``padding`` of the first convolution; ``activation`` after
    every layer (default "relu"). Weights: ``kernel_0`` (kh, kw, in, f_1), ``kernel_n``
    (f_n, f_{n+1}) and biases ``bias_n``. Deterministic; any spatial size works.

    Example:
        layer = MLPConv2D([32, 16, 16], kernel_size=3)
        y = layer(keras.random.normal((2, 8, 8, 3)))  # (2, 8, 8, 16)
    """

    def __init__(self, filters, kernel_size=3, strides=1, padding="same", activation="relu",
                 **kwargs):
        super().__init__(filters, kernel_size, strides=strides, padding=padding,
                         activation=activation, **kwargs)

    def _check_filters(self, filters):
        if isinstance(filters, (int, np.integer)) or not isinstance(filters, (list, tuple)) \
                or not filters:
            raise ValueError(f"`filters` must be a non-empty list of positive ints, got {filters!r}")
        return [_positive_int(f, "filters[i]") for f in filters]

    def build(self, input_shape):
        channels = self._channels(input_shape)
        self.kernels, self.biases = [], []
        fan_in = channels
        for n, f in enumerate(self.filters):
            shape = self.kernel_size + (fan_in, f) if n == 0 else (fan_in, f)
            self.kernels.append(self._kernel(shape, name=f"kernel_{n}"))
            self.biases.append(self._bias((f,), name=f"bias_{n}") if self.use_bias else None)
            fan_in = f

    def call(self, inputs):
        y = ops.conv(inputs, self.kernels[0], strides=self.strides, padding=self.padding)
        for n, (kernel, bias) in enumerate(zip(self.kernels, self.biases)):
            if n:
                y = ops.matmul(y, kernel)  # a 1x1 convolution is a matmul on channels
            if bias is not None:
                y = y + bias
            y = self.activation(y)
        return y


# ----------------------------------------------------------------------------- deformable
@_register
class DeformableConv2D(_ConvBase):
    """Deformable convolution v1 (Dai et al. 2017; S2, V-10).

    ``y(p0) = sum_n w(p_n) * x(p0 + p_n + dp_n) + b``: the regular grid p_n (dilated by
    ``dilation_rate``) is shifted by offsets dp_n predicted from the input by a parallel
    convolution with the same kernel size, strides, padding and dilation and 2*kh*kw output
    channels (channel 2n = dy, 2n+1 = dx of tap n = u*kw + v). x at fractional positions is
    bilinearly interpolated from its four neighbours; points outside the input read 0 (zero
    padding). The offset convolution (``offset_kernel``, ``offset_bias``) starts at zero
    (``offset_initializer``, as in the paper), so a fresh layer equals a Conv2D with the same
    kernel. Weights: ``kernel`` (kh, kw, in,
    filters), ``bias`` (filters,), ``offset_kernel`` (kh, kw, in, 2*kh*kw), ``offset_bias``.

    Args: ``filters``, ``kernel_size``, ``strides``, ``padding`` ("same" | "valid"),
    ``dilation_rate`` and the usual activation/initializer/regularizer arguments (the
    regularizer and constraint apply to ``kernel`` only). Deterministic; any spatial size.

    Cost: each output position gathers kh*kw 2x2 neighbourhoods (one gather of a 4-corner
    tensor) and a matmul applies the kernel; the sampled (B, H', W', kh*kw*C) tensor is
    materialised and the gather's gradient is a scatter-add, so on CPU a forward+backward costs
    10-20x a fused Conv2D (the price of data-dependent sampling positions).

    Example:
        layer = DeformableConv2D(16, 3)
        y = layer(keras.random.normal((2, 8, 8, 3)))  # (2, 8, 8, 16)
    """

    def __init__(self, filters, kernel_size=3, strides=1, padding="same", dilation_rate=1,
                 offset_initializer="zeros", **kwargs):
        super().__init__(filters, kernel_size, strides=strides, padding=padding, **kwargs)
        self.dilation_rate = _int_tuple(dilation_rate, 2, "dilation_rate")
        self.offset_initializer = keras.initializers.get(offset_initializer)
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError("DeformableConv2D: `strides` > 1 together with `dilation_rate` > 1 "
                             f"is not supported (got {self.strides} and {self.dilation_rate})")

    def build(self, input_shape):
        channels = self._channels(input_shape)
        taps = self.kernel_size[0] * self.kernel_size[1]
        self.kernel = self._kernel(self.kernel_size + (channels, self.filters))
        self.bias = self._bias((self.filters,)) if self.use_bias else None
        self.offset_kernel = self._kernel(self.kernel_size + (channels, 2 * taps),
                                          name="offset_kernel",
                                          initializer=self.offset_initializer, regularize=False)
        self.offset_bias = self.add_weight(name="offset_bias", shape=(2 * taps,),
                                           initializer="zeros")

    def call(self, inputs):
        kh, kw = self.kernel_size
        dh, dw = self.dilation_rate
        sh, sw = self.strides
        taps = kh * kw
        offsets = ops.conv(inputs, self.offset_kernel, strides=self.strides,
                           padding=self.padding, dilation_rate=self.dilation_rate)
        offsets = ops.cast(offsets + self.offset_bias, "float32")
        shape = ops.shape(inputs)
        batch, height, width, channels = shape[0], shape[1], shape[2], inputs.shape[-1]
        out_shape = ops.shape(offsets)
        out_h, out_w = out_shape[1], out_shape[2]
        offsets = ops.reshape(offsets, (-1, out_h, out_w, taps, 2))
        k_eff = [(k - 1) * d + 1 for k, d in zip(self.kernel_size, self.dilation_rate)]
        top = left = 0
        if self.padding == "same":
            top = _same_pad_before(height, k_eff[0], sh)
            left = _same_pad_before(width, k_eff[1], sw)
        # Sampling positions in input coordinates, float32 even under mixed precision.
        tap_y = np.repeat(np.arange(kh) * dh, kw).astype("float32")
        tap_x = np.tile(np.arange(kw) * dw, kh).astype("float32")
        row0 = ops.cast(ops.arange(out_h) * sh - top, "float32")
        col0 = ops.cast(ops.arange(out_w) * sw - left, "float32")
        pos_y = row0[:, None, None] + tap_y + offsets[..., 0]
        pos_x = col0[None, :, None] + tap_x + offsets[..., 1]
        y0, x0 = ops.floor(pos_y), ops.floor(pos_x)
        fy, fx = pos_y - y0, pos_x - x0
        y0, x0 = ops.cast(y0, "int32"), ops.cast(x0, "int32")
        # One gather per sample instead of four: cell (r, c) of ``corners`` holds the 2x2
        # neighbourhood with top-left (r - 1, c - 1) of the zero-padded input, so r = y0 + 1.
        padded = ops.pad(inputs, ((0, 0), (1, 1), (1, 1), (0, 0)))
        corners = ops.concatenate([padded[:, :-1, :-1], padded[:, :-1, 1:], padded[:, 1:, :-1],
                                   padded[:, 1:, 1:]], axis=-1)  # (B, H+1, W+1, 4C)
        height_i, width_i = ops.cast(height, "int32"), ops.cast(width, "int32")
        inside = (y0 >= -1) & (y0 < height_i) & (x0 >= -1) & (x0 < width_i)
        cell = ops.clip(y0 + 1, 0, height_i) * (width_i + 1) + ops.clip(x0 + 1, 0, width_i)
        base = ops.arange(batch, dtype="int32") * (height_i + 1) * (width_i + 1)
        flat = ops.reshape(corners, (-1, 4, channels))
        gathered = ops.take(flat, base[:, None, None, None] + cell, axis=0)  # (..., 4, C)
        weights = ops.stack([(1.0 - fy) * (1.0 - fx), (1.0 - fy) * fx, fy * (1.0 - fx), fy * fx],
                            axis=-1) * ops.cast(inside, "float32")[..., None]
        sampled = ops.sum(gathered * ops.cast(weights, self.compute_dtype)[..., None], axis=-2)
        sampled = ops.reshape(sampled, (-1, out_h, out_w, taps * channels))
        y = ops.matmul(sampled, ops.reshape(self.kernel, (taps * channels, self.filters)))
        if self.use_bias:
            y = y + self.bias
        return self.activation(y)

    def get_config(self):
        return {**super().get_config(), "dilation_rate": self.dilation_rate,
                "offset_initializer": keras.saving.serialize_keras_object(self.offset_initializer)}


# ----------------------------------------------------------------------------- SPD-Conv
def space_to_depth(x, block_size):
    """Rearrange (B, H, W, C) into (B, H/b, W/b, b*b*C); channel (dy*b + dx)*C + c.

    Same layout as ``tf.nn.space_to_depth`` (NHWC), written with ``keras.ops`` reshape and
    transpose; H and W must be multiples of ``block_size``.
    """
    b = _positive_int(block_size, "block_size")
    shape = ops.shape(x)
    height, width, channels = shape[1], shape[2], x.shape[-1]
    for name, size in (("height", height), ("width", width)):
        if isinstance(size, (int, np.integer)) and size % b:
            raise ValueError(f"space_to_depth: input {name} {size} is not a multiple of "
                             f"block_size {b}")
    x = ops.reshape(x, (-1, height // b, b, width // b, b, channels))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (-1, height // b, width // b, b * b * channels))


@_register
class SpaceToDepthConv2D(_ConvBase):
    """SPD-Conv: space-to-depth then a non-strided convolution (Sunkara & Luo 2022; S2, V-11).

    ``y = act(W * space_to_depth(x, b) + bias)`` with stride 1: downsamples by ``block_size``
    b without discarding pixels (no strided conv or pooling), which the paper motivates with
    low-resolution images and small objects. Weights: ``kernel`` (kh, kw, b*b*in, filters).

    Args: ``filters``, ``block_size`` b (H and W must be multiples of it), ``kernel_size`` and
    ``padding`` of the convolution (default "same"), usual activation/initializer args.
    Deterministic; any spatial size that is a multiple of b works.

    Example:
        layer = SpaceToDepthConv2D(16, block_size=2)
        y = layer(keras.random.normal((2, 8, 8, 3)))  # (2, 4, 4, 16)
    """

    def __init__(self, filters, block_size=2, kernel_size=3, padding="same", **kwargs):
        super().__init__(filters, kernel_size, strides=1, padding=padding, **kwargs)
        self.block_size = _positive_int(block_size, "block_size")

    def build(self, input_shape):
        channels = self._channels(input_shape)
        b = self.block_size
        for axis in (1, 2):
            if input_shape[axis] is not None and input_shape[axis] % b:
                raise ValueError(f"SpaceToDepthConv2D: spatial size {input_shape[1:3]} is not a "
                                 f"multiple of block_size {b}")
        self.kernel = self._kernel(self.kernel_size + (b * b * channels, self.filters))
        self.bias = self._bias((self.filters,)) if self.use_bias else None

    def call(self, inputs):
        y = ops.conv(space_to_depth(inputs, self.block_size), self.kernel, padding=self.padding)
        if self.use_bias:
            y = y + self.bias
        return self.activation(y)

    def compute_output_shape(self, input_shape):
        dims = [None if s is None else
                _conv_size(s // self.block_size, k, 1, self.padding)[0]
                for s, k in zip(input_shape[1:3], self.kernel_size)]
        return (input_shape[0], *dims, self.filters)

    def receptive_field_stages(self):
        b = (self.block_size,) * 2
        return [(b, b), (self.kernel_size, (1, 1))]

    def get_config(self):
        config = super().get_config()
        config.pop("strides")
        return {**config, "block_size": self.block_size}


# ----------------------------------------------------------------------------- BlurPool
@_register
class BlurPool2D(keras.layers.Layer):
    """Anti-aliased downsampling: binomial low-pass then stride (Zhang 2019; S4 aliasing, V-15).

    ``y = subsample_s(B_f * x)`` per channel, with B_f the normalised outer product of the
    binomial row C(f-1, i) (f = 3: [1, 2, 1]/4; f = 4: [1, 3, 3, 1]/8; f = 5: [1, 4, 6, 4, 1]/16).
    Strided layers ignore Nyquist-Shannon and alias (S4); blurring first restores much of the
    shift-equivariance. ``MaxPooling2D(2, strides=1)`` followed by this layer is Zhang's
    MaxBlurPool.

    Args: ``pool_size`` the stride s; ``filter_size`` f in 1..7; ``padding``: "same" (zero
    padding, Keras convention), "valid", or "reflect" (the paper's: reflect-pad (f-1)//2 before
    and f//2 after, then valid). No weights; deterministic; any spatial size works.

    Example:
        layer = BlurPool2D(pool_size=2, filter_size=3)
        y = layer(keras.random.normal((2, 8, 8, 3)))  # (2, 4, 4, 3)
    """

    def __init__(self, pool_size=2, filter_size=3, padding="same", **kwargs):
        super().__init__(**kwargs)
        self.pool_size = _positive_int(pool_size, "pool_size")
        self.filter_size = _positive_int(filter_size, "filter_size")
        if self.filter_size > 7:
            raise ValueError(f"`filter_size` must be in 1..7, got {filter_size!r}")
        self.padding = _choice(padding, ("same", "valid", "reflect"), "padding")

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ValueError(f"BlurPool2D expects a 4-D channels-last input with known channels, "
                             f"got {input_shape}")
        row = np.array([math.comb(self.filter_size - 1, i) for i in range(self.filter_size)],
                       "float64")
        blur = np.outer(row, row) / row.sum() ** 2
        self._filter = np.tile(blur[:, :, None, None], (1, 1, int(input_shape[-1]), 1))

    def call(self, inputs):
        x, padding = inputs, self.padding
        if padding == "reflect":
            before, after = (self.filter_size - 1) // 2, self.filter_size // 2
            x = ops.pad(x, ((0, 0), (before, after), (before, after), (0, 0)), mode="reflect")
            padding = "valid"
        kernel = ops.convert_to_tensor(self._filter, dtype=self.compute_dtype)
        return ops.depthwise_conv(x, kernel, strides=self.pool_size, padding=padding)

    def compute_output_shape(self, input_shape):
        # Reflect padding adds f - 1 pixels, so the valid blur gives ceil(size / stride) like "same".
        padding = "same" if self.padding == "reflect" else self.padding
        dims = [_conv_size(s, self.filter_size, self.pool_size, padding)[0]
                for s in input_shape[1:3]]
        return (input_shape[0], *dims, input_shape[-1])

    def receptive_field_stages(self):
        return [((self.filter_size,) * 2, (self.pool_size,) * 2)]

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size,
                "filter_size": self.filter_size, "padding": self.padding}


# ----------------------------------------------------------------------------- receptive field
ReceptiveField = collections.namedtuple("ReceptiveField", ["size", "jump"])
ReceptiveField.__doc__ = """Receptive field ``size`` and ``jump`` per spatial axis (result of receptive_field).

``jump`` is the distance, in input pixels, between adjacent output units."""

_NO_FIXED_FIELD = ("Global", "Adaptive", "Flatten", "Transpose", "UpSampling", "Reshape",
                   "Resizing", "Permute")


def _layer_stages(layer):
    """[(effective kernel, stride)] of one layer; [] for pointwise layers."""
    if hasattr(layer, "receptive_field_stages"):
        return layer.receptive_field_stages()
    name = type(layer).__name__
    if any(tag in name for tag in _NO_FIXED_FIELD):
        raise ValueError(f"receptive_field: layer {layer.name!r} ({name}) has no fixed receptive "
                         "field on its input grid; pass the conv/pool stack before it")
    if hasattr(layer, "kernel_size") and hasattr(layer, "strides"):
        dilation = getattr(layer, "dilation_rate", 1)
        dilation = (dilation,) * len(layer.kernel_size) if isinstance(dilation, int) else dilation
        k_eff = tuple((k - 1) * d + 1 for k, d in zip(layer.kernel_size, dilation))
        return [(k_eff, tuple(layer.strides))]
    if hasattr(layer, "pool_size") and hasattr(layer, "strides"):
        strides = layer.strides if layer.strides is not None else layer.pool_size
        return [(tuple(layer.pool_size), tuple(strides))]
    return []


def _flatten_layers(layers_or_model):
    if isinstance(layers_or_model, keras.layers.Layer) and hasattr(layers_or_model, "layers"):
        items = layers_or_model.layers
    elif isinstance(layers_or_model, keras.layers.Layer):
        items = [layers_or_model]
    elif isinstance(layers_or_model, (list, tuple)):
        items = list(layers_or_model)
    else:
        raise ValueError("receptive_field: `layers_or_model` must be a Keras model, a layer or a "
                         f"list of layers, got {type(layers_or_model).__name__}")
    flat = []
    for layer in items:
        if not isinstance(layer, keras.layers.Layer):
            raise ValueError(f"receptive_field: {layer!r} is not a Keras layer")
        if hasattr(layer, "layers") and not hasattr(layer, "receptive_field_stages"):
            flat.extend(_flatten_layers(layer))
            continue
        inbound = getattr(layer, "_inbound_nodes", [])
        if inbound and len(inbound[0].input_tensors) > 1:
            raise ValueError(f"receptive_field: layer {layer.name!r} merges several inputs; only "
                             "linear stacks are supported")
        flat.append(layer)
    return flat


def receptive_field(layers_or_model):
    """Receptive field and jump of a linear stack of conv/pool layers (C-07; survey S0 §3.1.3).

    Recurrence per spatial axis, from r = 1, j = 1: ``r <- r + (k_eff - 1) * j``,
    ``j <- j * s`` with ``k_eff = (k - 1) * d + 1`` for a kernel k dilated by d and stride s.
    Stacked 3x3 convs with dilations 1, 2, 4 give 3, 7, 15 (S0); a single 2-dilated 3x3 spans
    5x5, not the 7x7 of S2/S4 (errata §19.2). Handles Keras Conv1D/2D/3D (incl. separable and
    depthwise), pooling, the layers of this package (DeformableConv2D: its nominal grid before
    offsets) and nested Sequential models; pointwise layers (activations, BN, 1x1) add nothing.

    Returns ``ReceptiveField(size, jump)``, tuples with one entry per spatial axis. Raises
    ValueError for layers without a fixed field (global pooling, flatten, transposed conv,
    upsampling) and for merges (non-linear graphs).

    Example:
        stack = [keras.layers.Conv2D(8, 3, dilation_rate=d) for d in (1, 2, 4)]
        receptive_field(stack)  # ReceptiveField(size=(15, 15), jump=(1, 1))
    """
    size = jump = None
    for layer in _flatten_layers(layers_or_model):
        for k_eff, stride in _layer_stages(layer):
            if size is None:
                size, jump = [1] * len(k_eff), [1] * len(k_eff)
            if len(k_eff) != len(size):
                raise ValueError(f"receptive_field: layer {layer.name!r} is {len(k_eff)}-D but "
                                 f"the stack so far is {len(size)}-D")
            size = [r + (k - 1) * j for r, k, j in zip(size, k_eff, jump)]
            jump = [j * s for j, s in zip(jump, stride)]
    if size is None:
        raise ValueError("receptive_field: no convolution or pooling layer found in "
                         f"{layers_or_model!r}")
    return ReceptiveField(tuple(size), tuple(jump))
