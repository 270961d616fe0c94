"""Local pooling layers from the CNN literature (survey S0 §3.2, §5.10.2; SEED_CHECKLIST §4).

Window pooling: ``LpPooling2D`` (P-05), ``MixedPooling2D`` (P-06), ``StochasticPooling2D``
(P-07); frequency-domain pooling: ``SpectralPooling2D`` (P-08); sequence pooling for sentence
CNNs: ``KMaxPooling1D`` (P-12), ``DynamicKMaxPooling1D`` (P-13) and ``Folding1D``.
The aggregation layers (SPP, VLAD/MOP, bilinear) live in ``cnn_apps.layers.aggregation`` and are
re-exported here, so ``cnn_apps.layers`` sees every pooling name through this module.

All layers are written with ``keras.ops`` only (TensorFlow and JAX backends) and take
channels-last inputs by default; the 2D ones accept ``data_format="channels_first"`` by
transposing at entry and exit.
"""

import keras
from keras import ops

from cnn_apps.layers.aggregation import (BilinearPooling, SpatialPyramidPooling2D,
                                         VLADPooling, _check_data_format, fit_vlad_centers,
                                         multiscale_orderless_features, vlad_encode)

__all__ = [
    "LpPooling2D", "MixedPooling2D", "StochasticPooling2D", "SpectralPooling2D",
    "KMaxPooling1D", "DynamicKMaxPooling1D", "Folding1D",
    "SpatialPyramidPooling2D", "VLADPooling", "BilinearPooling",
    "vlad_encode", "fit_vlad_centers", "multiscale_orderless_features",
]


# ----------------------------------------------------------------------------- helpers
def _positive_pair(value, name, owner, allow_none=False):
    if value is None and allow_none:
        return None
    pair = (value, value) if isinstance(value, int) else tuple(value) if isinstance(
        value, (list, tuple)) else None
    if (pair is None or len(pair) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair)):
        raise ValueError(f"{owner}: `{name}` must be a positive int or a pair of positive ints, "
                         f"got {value!r}.")
    return pair


def _check_padding(padding, owner):
    padding = str(padding).lower()
    if padding not in ("valid", "same"):
        raise ValueError(f"{owner}: `padding` must be 'valid' or 'same', got {padding!r}.")
    return padding


def _to_channels_last(x, data_format):
    return ops.transpose(x, (0, 2, 3, 1)) if data_format == "channels_first" else x


def _from_channels_last(x, data_format):
    return ops.transpose(x, (0, 3, 1, 2)) if data_format == "channels_first" else x


def _clip_low(value, low):
    return max(value, low) if isinstance(value, int) else ops.maximum(value, low)


def _axis_geometry(size, pool, stride, padding):
    """Output length and (before, after) zero padding of one axis, Keras/TF conventions."""
    if size is None:
        return None, 0, 0
    if padding == "valid":
        return (size - pool) // stride + 1, 0, 0
    out = (size + stride - 1) // stride
    total = _clip_low((out - 1) * stride + pool - size, 0)
    return out, total // 2, total - total // 2


def _extract_windows(x, pool_size, strides, padding):
    """``(B, H, W, C) -> (B, Ho, Wo, ph*pw, C)``: each pooling window, row-major, zero padded.

    Works with dynamic H, W (TF). Non-overlapping windows (strides == pool_size, the default)
    take one reshape + transpose; other strides gather the ph·pw strided slices. Lp and
    stochastic pooling need every window's values on one axis (a per-window max / a
    per-window categorical draw), which the built-in pooling ops do not give.
    """
    (ph, pw), (sh, sw) = pool_size, strides
    shape = ops.shape(x)
    out_h, top, bottom = _axis_geometry(shape[1], ph, sh, padding)
    out_w, left, right = _axis_geometry(shape[2], pw, sw, padding)
    if padding == "same":
        x = ops.pad(x, [[0, 0], [top, bottom], [left, right], [0, 0]])
    channels = x.shape[-1]
    if (ph, pw) == (sh, sw):
        x = x[:, :out_h * ph, :out_w * pw, :]
        x = ops.reshape(x, (-1, out_h, ph, out_w, pw, channels))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
        return ops.reshape(x, (-1, out_h, out_w, ph * pw, channels))
    windows = [x[:, i:i + (out_h - 1) * sh + 1:sh, j:j + (out_w - 1) * sw + 1:sw, :]
               for i in range(ph) for j in range(pw)]
    return ops.stack(windows, axis=3)


class _WindowPooling2D(keras.layers.Layer):
    """Shared arguments, validation and shape logic of the 2D window pooling layers."""

    def __init__(self, pool_size=2, strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(**kwargs)
        name = type(self).__name__
        self.pool_size = _positive_pair(pool_size, "pool_size", name)
        self.strides = _positive_pair(strides, "strides", name, allow_none=True) or self.pool_size
        self.padding = _check_padding(padding, name)
        self.data_format = _check_data_format(data_format, name)

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(f"{type(self).__name__}: expected a 4D input (batch, H, W, C) "
                             f"or (batch, C, H, W), got shape {input_shape}.")
        spatial = input_shape[1:3] if self.data_format == "channels_last" else input_shape[2:]
        if self.padding == "valid":
            for size, pool in zip(spatial, self.pool_size):
                if size is not None and size < pool:
                    raise ValueError(f"{type(self).__name__}: spatial size {size} is smaller "
                                     f"than `pool_size` {self.pool_size} with padding='valid'.")

    def compute_output_shape(self, input_shape):
        if self.data_format == "channels_last":
            batch, height, width, channels = input_shape
        else:
            batch, channels, height, width = input_shape
        out_h = _axis_geometry(height, self.pool_size[0], self.strides[0], self.padding)[0]
        out_w = _axis_geometry(width, self.pool_size[1], self.strides[1], self.padding)[0]
        if self.data_format == "channels_last":
            return (batch, out_h, out_w, channels)
        return (batch, channels, out_h, out_w)

    def call(self, inputs, training=None):
        x = _to_channels_last(ops.cast(inputs, self.compute_dtype), self.data_format)
        return _from_channels_last(self._pool(x, bool(training)), self.data_format)

    def get_config(self):
        config = super().get_config()
        config.update(pool_size=self.pool_size, strides=self.strides, padding=self.padding,
                      data_format=self.data_format)
        return config


# ----------------------------------------------------------------------------- layers
@keras.saving.register_keras_serializable(package="cnn_apps")
class LpPooling2D(_WindowPooling2D):
    """Lp pooling: the p-norm of each window, y = (Σ_{(m,n)∈R} |a_{m,n}|^p)^(1/p).

    Survey S0 §3.2.1, SEED_CHECKLIST P-05. ``p=1`` is *sum* pooling, i.e. average pooling times
    the window size |R| (errata §19.14: not the average itself); ``p=2`` is L2-norm pooling; as
    p grows the result tends to max pooling of |a|. The same computation is used in training
    and inference.

    For numerical stability with large p each window is divided by its own max |a| before the
    power and multiplied back afterwards (the result is invariant to that scale, so the scale
    is held out of the gradient); an all-zero window gives 0 with a zero, finite gradient.
    With ``padding="same"`` the zero padding adds nothing to the sum. Speed: without XLA it
    runs ~5× slower than ``MaxPooling2D`` on TF CPU (about ten element-wise kernels instead of
    one fused pooling op); with ``jit_compile=True`` XLA fuses them and it is no slower.

    Args:
        p: the norm order, a float >= 1.
        pool_size, strides, padding, data_format: as in ``keras.layers.MaxPooling2D``
            (``strides`` defaults to ``pool_size``).

    Example:
        >>> x = keras.random.uniform((2, 8, 8, 3))
        >>> tuple(LpPooling2D(p=3)(x).shape)
        (2, 4, 4, 3)
    """

    def __init__(self, p=2.0, pool_size=2, strides=None, padding="valid", data_format=None,
                 **kwargs):
        super().__init__(pool_size, strides, padding, data_format, **kwargs)
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not p >= 1:
            raise ValueError(f"LpPooling2D: `p` must be a number >= 1, got {p!r}.")
        self.p = float(p)

    def _pool(self, x, training):
        windows = _extract_windows(ops.abs(x), self.pool_size, self.strides, self.padding)
        # y = s·(Σ (|a|/s)^p)^(1/p) for any s > 0; s = the window max keeps the powers in
        # [0, 1], and holding it out of the gradient changes nothing (y does not depend on s).
        peak = ops.stop_gradient(ops.max(windows, axis=3))
        scale = ops.where(peak > 0, peak, ops.ones_like(peak))
        total = ops.sum(ops.power(windows / ops.expand_dims(scale, 3), self.p), axis=3)
        # total >= 1 in a non-zero window (its max contributes exactly 1), so the 0.5 floor acts
        # only on all-zero windows (y = 0·0.5^(1/p), finite pow gradient) and never ties.
        return peak * ops.power(ops.maximum(total, 0.5), 1.0 / self.p)

    def get_config(self):
        return {**super().get_config(), "p": self.p}


@keras.saving.register_keras_serializable(package="cnn_apps")
class MixedPooling2D(_WindowPooling2D):
    """Mixed max/average pooling (Yu et al.): y = λ·max_R a + (1 − λ)·mean_R a.

    Survey S0 §3.2.2, SEED_CHECKLIST P-06 (and R-14 as a regularizer). In training
    (``training=True``) λ ∈ {0, 1} is drawn with probability 1/2 independently for every
    example and channel, and the gradient flows through the branch that was chosen. In
    inference the layer is deterministic and returns the expectation 0.5·max + 0.5·mean.
    Average pooling with ``padding="same"`` ignores the padded cells (Keras convention).

    Args:
        pool_size, strides, padding, data_format: as in ``keras.layers.MaxPooling2D``.
        seed: optional int seed for the λ draws.

    Example:
        >>> x = keras.random.normal((2, 8, 8, 3))
        >>> y = MixedPooling2D()(x, training=True)   # per (example, channel): max or mean
        >>> tuple(y.shape)
        (2, 4, 4, 3)
    """

    def __init__(self, pool_size=2, strides=None, padding="valid", data_format=None, seed=None,
                 **kwargs):
        super().__init__(pool_size, strides, padding, data_format, **kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def _pool(self, x, training):
        args = (self.pool_size, self.strides, self.padding, "channels_last")
        maximum, mean = ops.max_pool(x, *args), ops.average_pool(x, *args)
        if not training:
            return 0.5 * maximum + 0.5 * mean
        shape = ops.shape(x)
        draw = keras.random.uniform((shape[0], 1, 1, shape[3]), seed=self.seed_generator)
        return ops.where(draw < 0.5, maximum, mean)

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


@keras.saving.register_keras_serializable(package="cnn_apps")
class StochasticPooling2D(_WindowPooling2D):
    """Stochastic pooling (Zeiler & Fergus): pick one activation per window at random.

    Survey S0 §3.2.3, SEED_CHECKLIST P-07 (and R-13). With p_i = a_i / Σ_{k∈R} a_k, training
    (``training=True``) samples a location l ~ Multinomial(p_1..p_|R|) and returns a_l (the
    gradient goes to that location); inference is deterministic and returns the
    probability-weighted mean Σ p_i·a_i = Σ a_i² / Σ a_i.

    Inputs are expected to be non-negative (e.g. after ReLU). Negative activations get
    probability 0 (p uses max(a, 0)); a window with no positive activation returns 0 in
    inference, and in training returns one of its values without sampling (the last one).
    Padded cells (``padding="same"``) are zeros and are never picked while a positive value
    is present. Speed: without XLA training steps run ~5× slower than ``MaxPooling2D`` on TF
    CPU (window gather, cumulative sum and draw are separate kernels); XLA fuses them
    (``jit_compile=True``) to under the built-in's cost.

    Args:
        pool_size, strides, padding, data_format: as in ``keras.layers.MaxPooling2D``.
        seed: optional int seed for the location draws.

    Example:
        >>> x = keras.ops.relu(keras.random.normal((2, 8, 8, 3)))
        >>> tuple(StochasticPooling2D()(x, training=True).shape)
        (2, 4, 4, 3)
    """

    def __init__(self, pool_size=2, strides=None, padding="valid", data_format=None, seed=None,
                 **kwargs):
        super().__init__(pool_size, strides, padding, data_format, **kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def _pool(self, x, training):
        windows = _extract_windows(x, self.pool_size, self.strides, self.padding)
        weights = ops.relu(windows)
        if not training:
            total = ops.sum(weights, axis=3)
            positive = total > 0
            safe_total = ops.where(positive, total, ops.ones_like(total))
            mean = ops.sum(weights * windows, axis=3) / safe_total
            return ops.where(positive, mean, ops.zeros_like(mean))
        # Inverse-CDF sampling in float32 (a bfloat16 cumulative sum is too coarse).
        cdf = ops.cumsum(ops.cast(weights, "float32"), axis=3)
        total = cdf[:, :, :, -1:, :]
        draw = keras.random.uniform(ops.shape(total), seed=self.seed_generator)
        index = ops.sum(ops.cast(cdf <= draw * total, "int32"), axis=3, keepdims=True)
        index = ops.minimum(index, self.pool_size[0] * self.pool_size[1] - 1)
        return ops.squeeze(ops.take_along_axis(windows, index, axis=3), axis=3)

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


def _spectral_matrices(size, out, dtype):
    """Real and imaginary parts of M = IDFT_out · crop · DFT_size, scaled by 1/size: (out, size).

    M[u, n] = (1/size)·Σ_f exp(2πi·f·(u/out − n/size)) over the kept centred frequencies
    f = t − out//2, t = 0..out−1. The phase is reduced modulo out·size in integers, so the
    angles stay small and exact in float32.
    """
    freq = ops.arange(out, dtype="int32") - out // 2
    u = ops.arange(out, dtype="int32")
    n = ops.arange(size, dtype="int32")
    period = out * size
    step = ops.expand_dims(u * size, 1) - ops.expand_dims(n * out, 0)            # (out, size)
    cycles = ops.mod(ops.expand_dims(ops.expand_dims(freq, 1), 2) * step, period)
    angle = ops.cast(cycles, "float32") * (6.283185307179586 / ops.cast(period, "float32"))
    scale = 1.0 / ops.cast(size, "float32")
    real = ops.sum(ops.cos(angle), axis=0) * scale
    imag = ops.sum(ops.sin(angle), axis=0) * scale
    return ops.cast(real, dtype), ops.cast(imag, dtype)


@keras.saving.register_keras_serializable(package="cnn_apps")
class SpectralPooling2D(keras.layers.Layer):
    """Spectral pooling (Rippel et al.): keep the central h×w block of each channel's spectrum.

    Survey S0 §3.2.4, SEED_CHECKLIST P-08. Per channel: X = DFT2(x) (H×W), shift the zero
    frequency to the centre, crop the central h×w block (rows H//2 − h//2 ..), shift back,
    inverse DFT of size h×w, real part. Scaling convention: the result is multiplied by
    (h·w)/(H·W), so that a constant map keeps its value (pooling preserves the mean), i.e.
        y = real(ifft2(ifftshift(crop(fftshift(fft2(x)))))) · h·w / (H·W)
    with numpy's default ("backward") fft norms. Training and inference are identical.

    Implementation choice: the operation is linear and separable, y = Re(M_H · x · M_Wᵀ) with
    M = IDFT_h·crop·DFT_H of shape (h, H), so it is computed as four real matrix products
    (``method="matmul"``, the default). That runs in ``compute_dtype`` (bfloat16 included),
    needs no complex tensors (SavedModel/ONNX/TFLite friendly), jit-compiles and works with a
    dynamic H, W; for small feature maps it is also faster than an FFT. ``method="fft"`` uses
    ``keras.ops.fft2``/``ifft2`` on (real, imag) pairs in float32 and gives the same result.

    Args:
        output_size: (h, w), or one int for both; must not exceed the input size.
        method: "matmul" (default) or "fft".
        data_format: "channels_last" (default) or "channels_first".

    Example:
        >>> x = keras.random.normal((2, 16, 16, 3))
        >>> tuple(SpectralPooling2D((5, 5))(x).shape)
        (2, 5, 5, 3)
    """

    def __init__(self, output_size, method="matmul", data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.output_size = _positive_pair(output_size, "output_size", "SpectralPooling2D")
        if method not in ("matmul", "fft"):
            raise ValueError(f"SpectralPooling2D: `method` must be 'matmul' or 'fft', "
                             f"got {method!r}.")
        self.method = method
        self.data_format = _check_data_format(data_format, "SpectralPooling2D")

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(f"SpectralPooling2D: expected a 4D input, got shape {input_shape}.")
        spatial = input_shape[1:3] if self.data_format == "channels_last" else input_shape[2:]
        for size, out in zip(spatial, self.output_size):
            if size is not None and size < out:
                raise ValueError(f"SpectralPooling2D: `output_size` {self.output_size} exceeds "
                                 f"the input spatial size {tuple(spatial)}.")

    def compute_output_shape(self, input_shape):
        if self.data_format == "channels_last":
            return (input_shape[0], *self.output_size, input_shape[3])
        return (input_shape[0], input_shape[1], *self.output_size)

    def call(self, inputs):
        x = _to_channels_last(ops.cast(inputs, self.compute_dtype), self.data_format)
        shape = ops.shape(x)
        (out_h, out_w), (height, width) = self.output_size, (shape[1], shape[2])
        if self.method == "matmul":
            real_h, imag_h = _spectral_matrices(height, out_h, self.compute_dtype)
            real_w, imag_w = _spectral_matrices(width, out_w, self.compute_dtype)
            rows = ops.einsum("un,bnmc->bumc", ops.concatenate([real_h, imag_h], 0), x)
            real_rows, imag_rows = rows[:, :out_h], rows[:, out_h:]
            y = (ops.einsum("bumc,vm->buvc", real_rows, real_w)
                 - ops.einsum("bumc,vm->buvc", imag_rows, imag_w))
        else:
            planes = ops.transpose(ops.cast(x, "float32"), (0, 3, 1, 2))
            real, imag = ops.fft2((planes, ops.zeros_like(planes)))
            # Index j of the shifted-back h-spectrum holds frequency ((j + h//2) mod h) − h//2.
            for axis, out, size in ((2, out_h, height), (3, out_w, width)):
                freq = ops.mod(ops.arange(out, dtype="int32") + out // 2, out) - out // 2
                index = ops.mod(freq, size)
                real, imag = ops.take(real, index, axis=axis), ops.take(imag, index, axis=axis)
            y = ops.ifft2((real, imag))[0] * (out_h * out_w / ops.cast(height * width, "float32"))
            y = ops.cast(ops.transpose(y, (0, 2, 3, 1)), self.compute_dtype)
        return _from_channels_last(y, self.data_format)

    def get_config(self):
        config = super().get_config()
        config.update(output_size=self.output_size, method=self.method,
                      data_format=self.data_format)
        return config


def _top_k_in_order(x, k, length):
    """Top ``k`` values of ``(B, T, C)`` along T, kept in time order, zero-padded when T < k."""
    if isinstance(length, int) and isinstance(k, int):
        taken = min(k, length)
    else:
        taken = ops.minimum(k, length)
    by_channel = ops.transpose(x, (0, 2, 1))
    _, index = ops.top_k(by_channel, taken, sorted=False)
    values = ops.take_along_axis(by_channel, ops.sort(index, axis=-1), axis=-1)
    values = ops.transpose(values, (0, 2, 1))
    if isinstance(taken, int) and taken == k:
        return values
    return ops.pad(values, [[0, 0], [0, k - taken], [0, 0]])


class _SequencePooling(keras.layers.Layer):
    """Shared input check of the (batch, time, channels) layers."""

    def build(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"{type(self).__name__}: expected a 3D input (batch, time, "
                             f"channels), got shape {input_shape}.")


@keras.saving.register_keras_serializable(package="cnn_apps")
class KMaxPooling1D(_SequencePooling):
    """k-max pooling (Kalchbrenner et al. 2014): the k largest values per channel, in order.

    Survey S0 §5.10.2, SEED_CHECKLIST P-12. For every channel of a ``(batch, time, channels)``
    input it keeps the k largest activations along time **in their original order** (not
    sorted by value), so it sees how often and in what order a feature fires, which max
    pooling cannot. Output ``(batch, k, channels)``; a sequence shorter than k is returned
    whole and zero-padded at the end to length k (so the next layer always sees k steps).
    Training and inference are identical; the gradient reaches the kept positions.

    Args:
        k: number of values kept per channel, a positive int.

    Example:
        >>> x = keras.random.normal((2, 10, 4))
        >>> tuple(KMaxPooling1D(k=3)(x).shape)
        (2, 3, 4)
    """

    def __init__(self, k, **kwargs):
        super().__init__(**kwargs)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"KMaxPooling1D: `k` must be a positive int, got {k!r}.")
        self.k = k

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.k, input_shape[2])

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        y = _top_k_in_order(x, self.k, ops.shape(x)[1])
        return ops.reshape(y, (-1, self.k, ops.shape(x)[2]))

    def get_config(self):
        return {**super().get_config(), "k": self.k}


@keras.saving.register_keras_serializable(package="cnn_apps")
class DynamicKMaxPooling1D(_SequencePooling):
    """Dynamic k-max pooling (Kalchbrenner et al. 2014): k follows the sequence length.

    Survey S0 §5.10.2 ("k depends on the input feature map size"), SEED_CHECKLIST P-13; the
    formula is the DCNN paper's:
        k_l = max(k_top, ⌈(L − l) / L · s⌉)
    with s the (dynamic) length of the input sequence, l = ``layer_index`` the index of this
    convolutional layer (1-based) in a stack of L = ``num_layers``, and k_top the fixed k of
    the topmost pooling layer (l = L gives k_top). The k_l largest values per channel are kept
    in their original order, as in ``KMaxPooling1D``; if s < k_l the sequence is returned
    whole, zero-padded to k_l. With a dynamic length the output length changes per batch.
    Speed: k_l grows with s (e.g. 32 of 64 steps), and the top-k, the index sort and the
    gather of k_l·C values make it ~7-10× slower than ``GlobalMaxPooling1D``, which keeps one.

    Args:
        k_top: k of the top pooling layer, a positive int.
        layer_index: l, 1 <= l <= num_layers.
        num_layers: L, the number of convolutional layers of the network.

    Example:
        >>> x = keras.random.normal((2, 12, 4))
        >>> layer = DynamicKMaxPooling1D(k_top=3, layer_index=1, num_layers=3)
        >>> tuple(layer(x).shape)                               # k = max(3, ⌈2/3 · 12⌉) = 8
        (2, 8, 4)
    """

    def __init__(self, k_top, layer_index, num_layers, **kwargs):
        super().__init__(**kwargs)
        for name, value in (("k_top", k_top), ("layer_index", layer_index),
                            ("num_layers", num_layers)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DynamicKMaxPooling1D: `{name}` must be a positive int, "
                                 f"got {value!r}.")
        if layer_index > num_layers:
            raise ValueError(f"DynamicKMaxPooling1D: `layer_index` ({layer_index}) must not "
                             f"exceed `num_layers` ({num_layers}).")
        self.k_top, self.layer_index, self.num_layers = k_top, layer_index, num_layers

    def dynamic_k(self, length):
        """k for a sequence of ``length`` steps (int or scalar tensor), in exact integers."""
        remaining = self.num_layers - self.layer_index
        k = (remaining * length + self.num_layers - 1) // self.num_layers   # ceil
        return max(self.k_top, k) if isinstance(length, int) else ops.maximum(self.k_top, k)

    def compute_output_shape(self, input_shape):
        length = input_shape[1]
        return (input_shape[0], None if length is None else self.dynamic_k(length),
                input_shape[2])

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        length = ops.shape(x)[1]
        return _top_k_in_order(x, self.dynamic_k(length), length)

    def get_config(self):
        config = super().get_config()
        config.update(k_top=self.k_top, layer_index=self.layer_index,
                      num_layers=self.num_layers)
        return config


@keras.saving.register_keras_serializable(package="cnn_apps")
class Folding1D(_SequencePooling):
    """DCNN folding (Kalchbrenner et al. 2014): sum every two adjacent feature rows.

    SEED_CHECKLIST T-NLP-06/P-13 context (survey S0 §5.10.2 cites the DCNN). For an input
    ``(batch, time, d)`` with even d, y[..., i] = x[..., 2i] + x[..., 2i+1], giving
    ``(batch, time, d/2)``: it lets the row-wise (per embedding dimension) convolutions of the
    DCNN interact before k-max pooling, at no parameter cost. No training/inference
    difference.

    Example:
        >>> x = keras.random.normal((2, 7, 6))
        >>> tuple(Folding1D()(x).shape)
        (2, 7, 3)
    """

    def build(self, input_shape):
        super().build(input_shape)
        if input_shape[-1] is None or input_shape[-1] % 2:
            raise ValueError(f"Folding1D: the feature (last) dimension must be known and even, "
                             f"got shape {input_shape}.")

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] // 2)

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        return x[..., 0::2] + x[..., 1::2]
