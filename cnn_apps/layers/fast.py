"""Fast convolution algorithms (survey S0 §4.1; SEED_CHECKLIST F-01, F-02).

* :class:`FFTConv2D` - convolution by pointwise products in the Fourier domain
  (Mathieu et al.; F-01);
* :class:`WinogradConv2D` - Winograd minimal filtering ``F(2×2, 3×3)`` (Lavin & Gray 2016;
  F-02).

Both hold the same weights as ``keras.layers.Conv2D`` (kernel ``(kh, kw, C, filters)``, bias
``(filters,)``) and compute the same function, a stride-1 cross-correlation
``y[i, j, o] = Σ_{u, v, c} x[i+u, j+v, c]·K[u, v, c, o] + b[o]`` with ``"valid"`` or ``"same"``
padding (same zero padding as Conv2D: ``(k−1)//2`` before, the rest after). Other strides
and dilations are refused with a ``ValueError``: FFT convolution computes every output
position anyway (the survey notes its poor fit for stride > 1), and the Winograd tiles assume
unit stride. Weights can be copied to and from a Conv2D with ``set_weights``.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops
from cnn_apps.layers._validation import positive_int as _positive_int, int_pair as _int_pair

__all__ = ["FFTConv2D", "WinogradConv2D", "WINOGRAD_F2X2_3X3"]

_PACKAGE = "cnn_apps"

# Lavin & Gray (2016), F(2, 3): Y = Aᵀ[(G g Gᵀ) ∘ (Bᵀ d B)]A for 4×4 input tiles d.
WINOGRAD_F2X2_3X3 = {
    "BT": np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], "float32"),
    "G": np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], "float32"),
    "AT": np.array([[1, 1, 1, 0], [0, 1, -1, -1]], "float32"),
}


class _Conv2DLike(keras.layers.Layer):
    """Conv2D-compatible arguments, weights, padding, output shape and config."""

    def __init__(self, filters, kernel_size, strides=1, padding="valid", dilation_rate=1,
                 activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 **kwargs):
        super().__init__(**kwargs)
        name = type(self).__name__
        self.filters = _positive_int(filters, "filters")
        self.kernel_size = _int_pair(kernel_size, "kernel_size")
        if _int_pair(strides, "strides") != (1, 1):
            raise ValueError(f"{name} supports strides=1 only, got strides={strides!r}")
        if _int_pair(dilation_rate, "dilation_rate") != (1, 1):
            raise ValueError(f"{name} supports dilation_rate=1 only, got {dilation_rate!r}")
        padding = str(padding).lower()
        if padding not in ("valid", "same"):
            raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")
        self.padding = padding
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ValueError(f"{type(self).__name__} expects (batch, H, W, C) with known C, "
                             f"got {input_shape}")
        self.kernel = self.add_weight(name="kernel",
                                      shape=self.kernel_size + (int(input_shape[-1]),
                                                                self.filters),
                                      initializer=self.kernel_initializer,
                                      regularizer=self.kernel_regularizer)
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(self.filters,),
                                        initializer=self.bias_initializer,
                                        regularizer=self.bias_regularizer)
        self.built = True

    def _pad_same(self, x):
        if self.padding == "valid":
            return x
        kh, kw = self.kernel_size
        return ops.pad(x, [[0, 0], [(kh - 1) // 2, kh // 2], [(kw - 1) // 2, kw // 2], [0, 0]])

    def _finish(self, y):
        if self.use_bias:
            y = y + ops.cast(self.bias, y.dtype)
        return self.activation(y)

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        if self.padding == "valid":
            for axis, k in zip((1, 2), self.kernel_size):
                shape[axis] = None if shape[axis] is None else shape[axis] - k + 1
        shape[-1] = self.filters
        return tuple(shape)

    def get_config(self):
        config = super().get_config()
        ser = keras.saving.serialize_keras_object
        config.update({"filters": self.filters, "kernel_size": self.kernel_size,
                       "strides": (1, 1), "padding": self.padding, "dilation_rate": (1, 1),
                       "activation": keras.activations.serialize(self.activation),
                       "use_bias": self.use_bias,
                       "kernel_initializer": ser(self.kernel_initializer),
                       "bias_initializer": ser(self.bias_initializer),
                       "kernel_regularizer": ser(self.kernel_regularizer),
                       "bias_regularizer": ser(self.bias_regularizer)})
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class FFTConv2D(_Conv2DLike):
    """Conv2D computed with 2-D FFTs: ``y = a(F⁻¹[Σ_c F(x_c) · conj(F(K_{c,o}))] + b)``.

    Survey S0 §4.1 (Mathieu et al.; SEED_CHECKLIST F-01). After the ``"same"`` zero padding the
    input is ``Hp × Wp``; each kernel slice ``K[:, :, c, o]`` is zero-padded to ``Hp × Wp``
    and transformed ONCE per call (shared by the whole mini-batch); each input channel map
    is transformed once; the products are summed over input channels in the Fourier domain
    (a batched complex matrix product per frequency), so only one inverse FFT per output
    channel per image is needed. The conjugate turns the FFT's circular convolution into the
    cross-correlation Conv2D computes; the circular wrap only touches output rows/columns
    beyond ``Hp − kh``/``Wp − kw``, which are cropped ("valid" part). Cost
    ``O(B·C·HW log HW + HW·B·C·O)`` vs Conv2D's ``O(B·C·O·HW·kh·kw)``, so it wins for large
    kernels; memory: every filter padded to the map size. The transforms run in float32 (also
    under mixed precision; the output is cast to the compute dtype). Dynamic spatial sizes
    are supported. Same computation in training and inference.

    Args:
        filters, kernel_size, padding ("valid"/"same"), activation, use_bias, initializers,
        regularizers: as in Conv2D. ``strides`` and ``dilation_rate`` must be 1.

    Example:
        >>> layer = FFTConv2D(16, 9, padding="same")
        >>> layer(keras.ops.ones((2, 32, 32, 3))).shape   # same weights as Conv2D(16, 9)
        (2, 32, 32, 16)
    """

    def call(self, inputs):
        kh, kw = self.kernel_size
        x = self._pad_same(ops.cast(inputs, "float32"))
        shape = ops.shape(x)
        height, width = shape[1], shape[2]
        x = ops.transpose(x, (0, 3, 1, 2))                           # (B, C, Hp, Wp)
        x_re, x_im = ops.fft2((x, ops.zeros_like(x)))
        kernel = ops.transpose(ops.cast(self.kernel, "float32"), (2, 3, 0, 1))  # (C, O, kh, kw)
        kernel = ops.pad(kernel, [[0, 0], [0, 0], [0, height - kh], [0, width - kw]])
        k_re, k_im = ops.fft2((kernel, ops.zeros_like(kernel)))
        # Σ_c X·conj(K) per frequency as ONE real batched matmul:
        # [X_re X_im] · [[K_re, −K_im], [K_im, K_re]] = [Σ X_re K_re + X_im K_im,
        #                                                 Σ X_im K_re − X_re K_im].
        channels, filters = int(self.kernel.shape[2]), self.filters
        x_pair = ops.transpose(ops.concatenate([x_re, x_im], axis=1), (2, 3, 0, 1))
        x_pair = ops.reshape(x_pair, (-1, ops.shape(x_pair)[2], 2 * channels))  # (HW, B, 2C)
        k_block = ops.concatenate([ops.concatenate([k_re, -k_im], axis=1),
                                   ops.concatenate([k_im, k_re], axis=1)], axis=0)
        k_block = ops.reshape(ops.transpose(k_block, (2, 3, 0, 1)),
                              (-1, 2 * channels, 2 * filters))        # (HW, 2C, 2O)
        y = ops.matmul(x_pair, k_block)                               # (HW, B, 2O)
        y = ops.transpose(ops.reshape(y, (height, width, -1, 2 * filters)), (2, 3, 0, 1))
        y, _ = ops.ifft2((y[:, :filters], y[:, filters:]))
        y = ops.transpose(y[:, :, :height - kh + 1, :width - kw + 1], (0, 2, 3, 1))
        return self._finish(ops.cast(y, self.compute_dtype))


@keras.saving.register_keras_serializable(package=_PACKAGE)
class WinogradConv2D(_Conv2DLike):
    """3×3 stride-1 Conv2D by Winograd minimal filtering ``F(2×2, 3×3)``.

    Survey S0 §4.1 (SEED_CHECKLIST F-02; Lavin & Gray 2016). The (padded) input is cut into
    4×4 tiles ``d`` with stride 2 (the bottom/right edge is zero-padded to whole tiles and the
    extra outputs are cropped); each tile gives a 2×2 output block

        ``Y = Aᵀ [ Σ_c (G g_{c,o} Gᵀ) ∘ (Bᵀ d_c B) ] A``

    with ``Bᵀ, G, Aᵀ`` in :data:`WINOGRAD_F2X2_3X3`. The filter transform ``G g Gᵀ`` is done
    once per call, the channel sum happens in the transform space (16 batched matrix
    products ``(tiles × C)·(C × O)``) and one output transform per block follows: 16
    multiplies per 2×2 outputs instead of 36 (2.25× fewer). Computes in the compute dtype;
    dynamic spatial sizes are supported. Same computation in training and inference.

    Args:
        filters, padding ("valid"/"same"), activation, use_bias, initializers, regularizers:
        as in Conv2D. ``kernel_size`` must be 3 (or (3, 3)); ``strides``/``dilation_rate`` 1.

    Example:
        >>> layer = WinogradConv2D(32, 3, padding="same")
        >>> layer(keras.ops.ones((2, 16, 16, 8))).shape   # same weights as Conv2D(32, 3)
        (2, 16, 16, 32)
    """

    def __init__(self, filters, kernel_size=3, **kwargs):
        if _int_pair(kernel_size, "kernel_size") != (3, 3):
            raise ValueError(f"WinogradConv2D implements F(2x2, 3x3): kernel_size must be 3, "
                             f"got {kernel_size!r}")
        super().__init__(filters, kernel_size, **kwargs)

    @staticmethod
    def _input_transform(x, axis):
        """``Bᵀ d`` along ``axis`` (1 = rows, 2 = columns) for all tiles at once."""
        tiles = ops.shape(x)[axis] // 2 - 1
        parts = []
        for r in range(4):
            index = [slice(None)] * 4
            index[axis] = slice(r, r + 2 * tiles, 2)                 # rows 2i + r
            parts.append(x[tuple(index)])
        d0, d1, d2, d3 = parts
        return [d0 - d2, d1 + d2, d2 - d1, d1 - d3]

    def call(self, inputs):
        x = self._pad_same(ops.cast(inputs, self.compute_dtype))
        shape = ops.shape(x)
        out_h, out_w = shape[1] - 2, shape[2] - 2
        tiles_h, tiles_w = (out_h + 1) // 2, (out_w + 1) // 2
        # Zero-pad to 2·tiles + 2 rows/columns so every 4×4 tile is whole.
        x = ops.pad(x, [[0, 0], [0, 2 * tiles_h + 2 - shape[1]],
                        [0, 2 * tiles_w + 2 - shape[2]], [0, 0]])
        transformed = []
        for rows in self._input_transform(x, axis=1):
            transformed += self._input_transform(rows, axis=2)       # 16 × (B, th, tw, C)
        channels = int(self.kernel.shape[2])
        v = ops.reshape(ops.stack(transformed, axis=0), (16, -1, channels))
        g = ops.cast(WINOGRAD_F2X2_3X3["G"], self.compute_dtype)
        u = ops.einsum("ai,ijco,bj->abco", g, ops.cast(self.kernel, self.compute_dtype), g)
        m = ops.matmul(v, ops.reshape(u, (16, channels, self.filters)))   # (16, P, O)
        m = ops.reshape(m, (4, 4, -1, self.filters))
        # Aᵀ m A with Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]], written as adds (no multiplies).
        rows = [m[0] + m[1] + m[2], m[1] - m[2] - m[3]]               # 2 × (4, P, O)
        y = ops.stack([ops.stack([r[0] + r[1] + r[2], r[1] - r[2] - r[3]], axis=1)
                       for r in rows], axis=1)                        # (P, 2, 2, O)
        y = ops.reshape(y, (-1, tiles_h, tiles_w, 2, 2, self.filters))
        y = ops.transpose(y, (0, 1, 3, 2, 4, 5))
        y = ops.reshape(y, (-1, 2 * tiles_h, 2 * tiles_w, self.filters))
        return self._finish(y[:, :out_h, :out_w, :])
