"""Structured and shared-weight dense layers (survey S0 §4.2, §4.4; SEED_CHECKLIST §12).

* :class:`LowRankDense` - ``W = A·B`` with rank ``r`` (S0 §4.2, F-03/F-04);
* :class:`TTDense` - tensor-train factorized weight matrix (Novikov et al., F-06);
* :class:`CirculantDense` - ``y = ifft(fft(v) ∘ fft(D x))`` (Cheng et al., F-08);
* :class:`FastfoodDense` - adaptive Fastfood ``y = D1 H D2 Π H D3 x`` (Yang et al., F-07);
* :class:`ACDCDense` - ``y = C⁻¹ D C A x`` with the orthonormal DCT ``C`` (Moczulski et al., F-09);
* :class:`HashedDense` - HashedNets: ``V_ij = ξ(i, j)·w[h(i, j)]`` (Chen et al., F-23).

Vectors are rows in code (``y = x·Wᵀ`` for a column-vector formula ``y = W x``); every layer
maps the last axis and keeps any leading axes. The circulant, Fastfood and ACDC layers are
square ``n → n`` maps (``n`` = input size; Fastfood pads ``n`` up to a power of two); their
``units`` argument keeps the first ``units`` outputs (``units <= n``), as Cheng et al. do for
``k < d``. Fixed random parts (sign flips, permutations) are non-trainable weights, so a saved
model reloads them exactly; HashedDense recomputes its hash from ``seed`` instead (the index
table is not stored, so the bytes on disk stay ``num_buckets`` floats).
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops
from cnn_apps.layers._validation import positive_int as _positive_int

__all__ = ["LowRankDense", "TTDense", "CirculantDense", "FastfoodDense", "ACDCDense",
           "HashedDense", "walsh_hadamard", "dct_ortho", "idct_ortho", "hashed_dense_index"]

_PACKAGE = "cnn_apps"


def _int_list(values, name):
    values = [values] if isinstance(values, (int, np.integer)) else list(values)
    if not values:
        raise ValueError(f"{name} must be a non-empty list of positive integers")
    return [_positive_int(v, name) for v in values]


def _last_dim(input_shape, layer_name):
    n = input_shape[-1]
    if n is None:
        raise ValueError(f"{layer_name} needs a known last input dimension, got None")
    return int(n)


class _DenseHead:
    """Shared bias + activation + ``(…, n) → (…, units)`` bookkeeping."""

    def _init_head(self, activation, use_bias, bias_initializer):
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def _add_bias(self, units):
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(units,),
                                        initializer=self.bias_initializer)

    def _finish(self, y):
        if self.use_bias:
            y = y + ops.cast(self.bias, y.dtype)
        return self.activation(y)

    def _head_config(self):
        return {"activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "bias_initializer": keras.saving.serialize_keras_object(self.bias_initializer)}


def _flatten_leading(x):
    """``(…, n)`` → ``(m, n)`` and the leading shape to restore it."""
    shape = ops.shape(x)
    return ops.reshape(x, (-1, shape[-1])), shape[:-1]


def _restore_leading(y, leading):
    return ops.reshape(y, tuple(leading) + (ops.shape(y)[-1],))


# ------------------------------------------------------------------------- fast transforms
def walsh_hadamard(x):
    """Unnormalized fast Walsh-Hadamard transform over the last axis (Sylvester order).

    Equals ``x @ scipy.linalg.hadamard(n)`` for ``n`` a power of two; ``log2(n)`` butterfly
    stages of ``O(n)`` each, so ``O(n log n)``.
    """
    n = x.shape[-1]
    if n is None or n & (n - 1):
        raise ValueError(f"walsh_hadamard needs a last axis that is a power of two, got {n}")
    flat = ops.reshape(x, (-1, n))
    half = 1
    while half < n:
        pairs = ops.reshape(flat, (-1, n // (2 * half), 2, half))
        first, second = pairs[:, :, 0, :], pairs[:, :, 1, :]
        flat = ops.reshape(ops.stack([first + second, first - second], axis=2), (-1, n))
        half *= 2
    return ops.reshape(flat, ops.shape(x))


def _dct_scale(n):
    scale = np.full((n,), math.sqrt(2.0 / n), dtype="float32")
    scale[0] = math.sqrt(1.0 / n)
    return scale


def dct_ortho(x):
    """Orthonormal DCT-II over the last axis (``scipy.fft.dct(x, norm="ortho")``), via a
    length-``2n`` real FFT: ``X_k = s_k · Re(e^{-iπk/2n} · FFT_2n(x)_k)``. Float32 inside."""
    n = int(x.shape[-1])
    x = ops.cast(x, "float32")
    pad = [[0, 0]] * (len(x.shape) - 1) + [[0, n]]
    real, imag = ops.rfft(ops.pad(x, pad))
    real, imag = real[..., :n], imag[..., :n]
    angle = -np.pi * np.arange(n) / (2.0 * n)
    out = real * np.cos(angle).astype("float32") - imag * np.sin(angle).astype("float32")
    return out * _dct_scale(n)


def idct_ortho(x):
    """Inverse of :func:`dct_ortho` (orthonormal DCT-III), via a length-``2n`` inverse real
    FFT of ``Z_k = s_k X_k e^{iπk/2n}`` (DC doubled, Nyquist zero). Float32 inside."""
    n = int(x.shape[-1])
    x = ops.cast(x, "float32") * _dct_scale(n)
    angle = np.pi * np.arange(n) / (2.0 * n)
    cos, sin = np.cos(angle).astype("float32"), np.sin(angle).astype("float32")
    dc_double = np.ones((n,), "float32")
    dc_double[0] = 2.0
    pad = [[0, 0]] * (len(x.shape) - 1) + [[0, 1]]
    real = ops.pad(x * cos * dc_double, pad)
    imag = ops.pad(x * sin * dc_double, pad)
    return ops.irfft((real, imag), fft_length=2 * n)[..., :n] * float(n)


# ------------------------------------------------------------------------------- low rank
@keras.saving.register_keras_serializable(package=_PACKAGE)
class LowRankDense(_DenseHead, keras.layers.Layer):
    """Dense layer with a rank-``r`` weight ``W = A·B``: ``y = a((x·A)·B + b)``.

    Survey S0 §4.2 (SEED_CHECKLIST F-03, F-04): an ``m×n`` matrix of rank ``r`` stored as
    ``A (n×r)`` and ``B (r×units)`` costs ``r(n + units)`` parameters and multiplies instead of
    ``n·units``; it saves a fraction ``p`` of them when ``r < p·n·units/(n + units)``. The
    product is never formed (two matmuls). ``cnn_apps.compression.factorize`` fills ``A, B``
    from a truncated SVD of a trained Dense kernel. Same computation in training and inference.

    Args:
        units: output size.
        rank: inner dimension ``r``.
        activation, use_bias, bias_initializer: as in Dense.
        kernel_initializer: initializer of both factors (default Glorot-uniform).

    Weights (in ``get_weights`` order): ``kernel_a (n, rank)``, ``kernel_b (rank, units)``,
    ``bias (units,)``.

    Example:
        >>> layer = LowRankDense(256, rank=16)
        >>> layer(keras.ops.ones((2, 512))).shape   # 16·(512+256) weights, not 512·256
        (2, 256)
    """

    def __init__(self, units, rank, activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.units = _positive_int(units, "units")
        self.rank = _positive_int(rank, "rank")
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self._init_head(activation, use_bias, bias_initializer)

    def build(self, input_shape):
        n = _last_dim(input_shape, "LowRankDense")
        self.kernel_a = self.add_weight(name="kernel_a", shape=(n, self.rank),
                                        initializer=self.kernel_initializer)
        self.kernel_b = self.add_weight(name="kernel_b", shape=(self.rank, self.units),
                                        initializer=self.kernel_initializer)
        self._add_bias(self.units)
        self.built = True

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        y = ops.matmul(ops.matmul(x, ops.cast(self.kernel_a, x.dtype)),
                       ops.cast(self.kernel_b, x.dtype))
        return self._finish(y)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        config = super().get_config()
        config.update({"units": self.units, "rank": self.rank,
                       "kernel_initializer":
                           keras.saving.serialize_keras_object(self.kernel_initializer),
                       **self._head_config()})
        return config


# ---------------------------------------------------------------------------- tensor train
@keras.saving.register_keras_serializable(package=_PACKAGE)
class TTDense(_DenseHead, keras.layers.Layer):
    """Dense layer whose weight is a tensor train (TT-matrix): ``y = a(x·W + b)`` with
    ``W[(i_1..i_d), (j_1..j_d)] = G_1[:, i_1, j_1, :] · G_2[:, i_2, j_2, :] ⋯ G_d[:, i_d, j_d, :]``.

    Survey S0 §4.2 (Novikov et al., SEED_CHECKLIST F-06). The input size must be
    ``n = Π input_modes`` and the output size is ``units = Π output_modes``; row index
    ``i = (i_1, …, i_d)`` and column index ``j`` are read in row-major order (``i_1`` most
    significant). Core ``G_k`` has shape ``(r_{k-1}, n_k, m_k, r_k)`` with ``r_0 = r_d = 1``:
    ``Σ_k r_{k-1} n_k m_k r_k`` parameters instead of ``n·units``. ``x`` is contracted with one
    core at a time; ``W`` is never formed. Same computation in training and inference.

    Args:
        input_modes: ``(n_1, …, n_d)``, product = input size.
        output_modes: ``(m_1, …, m_d)``, same length ``d``.
        tt_ranks: one int (all inner ranks) or the ``d - 1`` inner ranks ``(r_1, …, r_{d-1})``.
        activation, use_bias, bias_initializer: as in Dense.
        kernel_initializer: initializer of the cores (default: normal with a std chosen so
            ``W`` has Glorot variance ``2/(n+units)``).

    Weights: ``core_1 … core_d`` then ``bias``.

    Example:
        >>> layer = TTDense(input_modes=(4, 8, 8), output_modes=(4, 4, 4), tt_ranks=4)
        >>> layer(keras.ops.ones((2, 256))).shape
        (2, 64)
    """

    def __init__(self, input_modes, output_modes, tt_ranks=4, activation=None, use_bias=True,
                 kernel_initializer=None, bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.input_modes = _int_list(input_modes, "input_modes")
        self.output_modes = _int_list(output_modes, "output_modes")
        d = len(self.input_modes)
        if len(self.output_modes) != d:
            raise ValueError(f"output_modes must have as many entries as input_modes ({d}), "
                             f"got {self.output_modes}")
        ranks = [tt_ranks] * (d - 1) if isinstance(tt_ranks, (int, np.integer)) else tt_ranks
        self.tt_ranks = _int_list(ranks, "tt_ranks") if d > 1 else []
        if len(self.tt_ranks) != d - 1:
            raise ValueError(f"tt_ranks must be one int or {d - 1} ints, got {tt_ranks!r}")
        self.units = int(np.prod(self.output_modes))
        self.kernel_initializer = (keras.initializers.get(kernel_initializer)
                                   if kernel_initializer is not None else None)
        self._init_head(activation, use_bias, bias_initializer)

    def build(self, input_shape):
        n = _last_dim(input_shape, "TTDense")
        if n != int(np.prod(self.input_modes)):
            raise ValueError(f"input_modes {self.input_modes} multiply to "
                             f"{int(np.prod(self.input_modes))}, but the input size is {n}")
        ranks = [1] + self.tt_ranks + [1]
        initializer = self.kernel_initializer
        if initializer is None:
            # Var(W_ij) = Π_k r_k σ² (sum over the d-1 inner ranks) = 2/(n + units).
            d = len(self.input_modes)
            target = 2.0 / (n + self.units)
            std = (target / float(np.prod(self.tt_ranks or [1]))) ** (1.0 / (2 * d))
            initializer = keras.initializers.RandomNormal(stddev=std)
        self.cores = [self.add_weight(name=f"core_{k + 1}",
                                      shape=(ranks[k], n_k, m_k, ranks[k + 1]),
                                      initializer=initializer)
                      for k, (n_k, m_k) in enumerate(zip(self.input_modes, self.output_modes))]
        self._add_bias(self.units)
        self.built = True

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        flat, leading = _flatten_leading(x)
        # state: (batch · m_1..m_{k-1}, r_{k-1}, n_k · … · n_d)
        state = ops.reshape(flat, (-1, 1, int(np.prod(self.input_modes))))
        for k, core in enumerate(self.cores):
            r_prev, n_k, m_k, r_k = core.shape
            rest = int(np.prod(self.input_modes[k + 1:])) if k + 1 < len(self.cores) else 1
            state = ops.reshape(state, (-1, r_prev, n_k, rest))
            state = ops.einsum("brnz,rnms->bmsz", state, ops.cast(core, x.dtype))
            state = ops.reshape(state, (-1, r_k, rest))
        y = ops.reshape(state, (-1, self.units))
        return self._finish(_restore_leading(y, leading))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        config = super().get_config()
        config.update({"input_modes": self.input_modes, "output_modes": self.output_modes,
                       "tt_ranks": self.tt_ranks,
                       "kernel_initializer":
                           keras.saving.serialize_keras_object(self.kernel_initializer),
                       **self._head_config()})
        return config


# ------------------------------------------------------------------ square structured maps
class _SquareStructured(_DenseHead, keras.layers.Layer):
    """``n → n`` structured map; ``units`` keeps the first outputs; ``seed`` fixes the random
    parts, drawn with numpy at build time and stored as non-trainable weights."""

    def __init__(self, units=None, activation=None, use_bias=True, bias_initializer="zeros",
                 seed=0, **kwargs):
        super().__init__(**kwargs)
        self.units = None if units is None else _positive_int(units, "units")
        self.seed = None if seed is None else int(seed)
        self._init_head(activation, use_bias, bias_initializer)

    def _size(self, input_shape, padded=None):
        n = _last_dim(input_shape, type(self).__name__)
        limit = padded or n
        if self.units is not None and self.units > limit:
            raise ValueError(f"units must be <= {limit} for {type(self).__name__} on inputs of "
                             f"size {n}, got {self.units}")
        return n

    def _out_units(self, n):
        return self.units if self.units is not None else n

    def _fixed(self, name, values, dtype="float32"):
        weight = self.add_weight(name=name, shape=values.shape, initializer="zeros",
                                 dtype=dtype, trainable=False)
        weight.assign(values.astype(dtype))
        return weight

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self._out_units(input_shape[-1]),)

    def get_config(self):
        config = super().get_config()
        config.update({"units": self.units, "seed": self.seed, **self._head_config()})
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CirculantDense(_SquareStructured):
    """Circulant projection with random sign flips: ``y = a(C(v)·D·x + b)``, computed as
    ``C D x = ifft(fft(v) ∘ fft(D x))``.

    Survey S0 §4.2 (Cheng et al., SEED_CHECKLIST F-08). ``C(v)`` is the circulant matrix with
    first column ``v`` (``C_ij = v[(i − j) mod n]``, ``scipy.linalg.circulant(v)``); ``D`` is a
    fixed random ±1 diagonal (drawn from ``seed``, stored as a non-trainable weight). Time
    ``O(n log n)`` with real FFTs, ``n`` trainable parameters (+ bias). ``units < n`` keeps the
    first ``units`` outputs. The FFT runs in float32 (also under mixed precision; the result is
    cast to the compute dtype). Same computation in training and inference.

    Args:
        units: number of outputs kept (``<= n``; default ``n``).
        activation, use_bias, bias_initializer: as in Dense.
        kernel_initializer: initializer of ``v`` (default normal, std ``1/sqrt(n)``).
        seed: integer seed of the sign flips.

    Example:
        >>> layer = CirculantDense(seed=1)
        >>> layer(keras.ops.ones((2, 1024))).shape   # 1024 weights instead of 1024²
        (2, 1024)
    """

    def __init__(self, units=None, activation=None, use_bias=True, kernel_initializer=None,
                 bias_initializer="zeros", seed=0, **kwargs):
        super().__init__(units, activation, use_bias, bias_initializer, seed, **kwargs)
        self.kernel_initializer = (keras.initializers.get(kernel_initializer)
                                   if kernel_initializer is not None else None)

    def build(self, input_shape):
        n = self._size(input_shape)
        initializer = self.kernel_initializer or keras.initializers.RandomNormal(
            stddev=1.0 / math.sqrt(n))
        self.kernel = self.add_weight(name="kernel", shape=(n,), initializer=initializer)
        signs = np.random.default_rng(self.seed).integers(0, 2, size=n) * 2 - 1
        self.signs = self._fixed("signs", signs)
        self._add_bias(self._out_units(n))
        self.built = True

    def call(self, inputs):
        n = int(self.kernel.shape[0])
        x = ops.cast(inputs, "float32") * ops.cast(self.signs, "float32")
        x_re, x_im = ops.rfft(x)
        v_re, v_im = ops.rfft(ops.cast(self.kernel, "float32"))
        y = ops.irfft((x_re * v_re - x_im * v_im, x_re * v_im + x_im * v_re), fft_length=n)
        y = ops.cast(y[..., :self._out_units(n)], self.compute_dtype)
        return self._finish(y)

    def get_config(self):
        config = super().get_config()
        config["kernel_initializer"] = keras.saving.serialize_keras_object(
            self.kernel_initializer)
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class FastfoodDense(_SquareStructured):
    """Adaptive Fastfood transform: ``y = a(D1·H·D2·Π·H·D3·x + b)``.

    Survey S0 §4.2 (Yang et al., deep fried convnets; SEED_CHECKLIST F-07). ``D1, D2, D3`` are
    learned diagonals, ``Π`` a fixed random permutation (from ``seed``, a non-trainable int
    weight), ``H = hadamard(N)/sqrt(N)`` the orthonormal Walsh-Hadamard matrix applied with
    the fast transform. ``O(N)`` parameters and ``O(N log N)`` time. ``N`` must be a power of
    two: an input of size ``n`` is zero-padded to the next power of two ``N`` (documented
    choice instead of an error), and ``units`` (default ``n``, at most ``N``) outputs are kept.
    Same computation in training and inference.

    Args:
        units: number of outputs kept (``<= N``; default the input size ``n``).
        activation, use_bias, bias_initializer: as in Dense.
        diagonal_initializer: initializer of ``D2`` and ``D3`` (default standard normal;
            ``D1`` starts at ones).
        seed: integer seed of the permutation.

    Example:
        >>> layer = FastfoodDense(seed=3)
        >>> layer(keras.ops.ones((2, 1000))).shape   # padded to 1024 inside
        (2, 1000)
    """

    def __init__(self, units=None, activation=None, use_bias=True,
                 diagonal_initializer="random_normal", bias_initializer="zeros", seed=0,
                 **kwargs):
        super().__init__(units, activation, use_bias, bias_initializer, seed, **kwargs)
        self.diagonal_initializer = keras.initializers.get(diagonal_initializer)

    @staticmethod
    def padded_size(n):
        return 1 << max(0, int(n - 1).bit_length())

    def build(self, input_shape):
        n = _last_dim(input_shape, "FastfoodDense")
        size = self.padded_size(n)
        self._size(input_shape, padded=size)
        self.d1 = self.add_weight(name="d1", shape=(size,), initializer="ones")
        self.d2 = self.add_weight(name="d2", shape=(size,), initializer=self.diagonal_initializer)
        self.d3 = self.add_weight(name="d3", shape=(size,), initializer=self.diagonal_initializer)
        self.permutation = self._fixed(
            "permutation", np.random.default_rng(self.seed).permutation(size), dtype="int32")
        self._add_bias(self._out_units(n))
        self.built = True

    def call(self, inputs):
        n, size = int(inputs.shape[-1]), int(self.d1.shape[0])
        x = ops.cast(inputs, self.compute_dtype)
        if size > n:
            x = ops.pad(x, [[0, 0]] * (len(x.shape) - 1) + [[0, size - n]])
        scale = ops.cast(1.0 / math.sqrt(size), x.dtype)
        x = walsh_hadamard(x * ops.cast(self.d3, x.dtype)) * scale
        x = ops.take(x, self.permutation, axis=-1) * ops.cast(self.d2, x.dtype)
        x = walsh_hadamard(x) * scale * ops.cast(self.d1, x.dtype)
        return self._finish(x[..., :self._out_units(n)])

    def get_config(self):
        config = super().get_config()
        config["diagonal_initializer"] = keras.saving.serialize_keras_object(
            self.diagonal_initializer)
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ACDCDense(_SquareStructured):
    """ACDC⁻¹ structured layer: ``y = a(C⁻¹·D·C·A·x + b)``.

    Survey S0 §4.2 (Moczulski et al., SEED_CHECKLIST F-09): learned diagonals ``A`` and ``D``
    interleaved with the orthonormal DCT-II matrix ``C`` (``C x = scipy.fft.dct(x,
    norm="ortho")``, ``C⁻¹ = Cᵀ``); the paper writes ``Φ(x) = x A C D C⁻¹`` for row vectors.
    ``2n`` parameters, ``O(n log n)`` time (DCTs via length-``2n`` real FFTs, in float32 even
    under mixed precision). Stack several (with ReLU or permutations between) for a deeper
    structured map. Same computation in training and inference.

    Args:
        units: number of outputs kept (``<= n``; default ``n``).
        activation, use_bias, bias_initializer: as in Dense.
        diagonal_initializer: initializer of ``A`` and ``D`` (default: normal, mean 1, std 0.1,
            close to the identity map as the paper recommends).

    Example:
        >>> layer = ACDCDense()
        >>> layer(keras.ops.ones((2, 512))).shape
        (2, 512)
    """

    def __init__(self, units=None, activation=None, use_bias=True, diagonal_initializer=None,
                 bias_initializer="zeros", **kwargs):
        super().__init__(units, activation, use_bias, bias_initializer, None, **kwargs)
        self.diagonal_initializer = (keras.initializers.get(diagonal_initializer)
                                     if diagonal_initializer is not None else None)

    def build(self, input_shape):
        n = self._size(input_shape)
        initializer = self.diagonal_initializer or keras.initializers.RandomNormal(1.0, 0.1)
        self.diag_a = self.add_weight(name="diag_a", shape=(n,), initializer=initializer)
        self.diag_d = self.add_weight(name="diag_d", shape=(n,), initializer=initializer)
        self._add_bias(self._out_units(n))
        self.built = True

    def call(self, inputs):
        n = int(self.diag_a.shape[0])
        x = ops.cast(inputs, "float32") * ops.cast(self.diag_a, "float32")
        y = idct_ortho(dct_ortho(x) * ops.cast(self.diag_d, "float32"))
        return self._finish(ops.cast(y[..., :self._out_units(n)], self.compute_dtype))

    def get_config(self):
        config = super().get_config()
        config.pop("seed")
        config["diagonal_initializer"] = keras.saving.serialize_keras_object(
            self.diagonal_initializer)
        return config


# ----------------------------------------------------------------------------- HashedNets
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix64(z):
    """splitmix64 finalizer on uint64 arrays (wrap-around arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def hashed_dense_index(n_in, units, num_buckets, seed=0):
    """Bucket index ``h(i, j)`` and sign ``ξ(i, j)`` of every virtual weight, as numpy arrays
    of shape ``(n_in, units)``.

    ``key = i·units + j``; ``z = mix64(key + (2·seed + 1)·φ)`` with ``φ = 0x9E3779B97F4A7C15``
    and ``mix64`` the splitmix64 finalizer (all arithmetic mod 2⁶⁴); ``h = (z >> 1) mod
    num_buckets`` and ``ξ = +1`` if the lowest bit of ``z`` is 0, else ``−1``.
    """
    with np.errstate(over="ignore"):
        key = np.arange(n_in * units, dtype=np.uint64)
        z = _mix64(key + np.uint64(2 * int(seed) + 1) * _GOLDEN)
    index = ((z >> np.uint64(1)) % np.uint64(num_buckets)).astype("int32")
    sign = np.where(z & np.uint64(1), -1.0, 1.0).astype("float32")
    return index.reshape(n_in, units), sign.reshape(n_in, units)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class HashedDense(_DenseHead, keras.layers.Layer):
    """HashedNets dense layer: ``y = a(x·V + b)`` with virtual weights
    ``V_ij = ξ(i, j)·w[h(i, j)]``.

    Survey S0 §4.4 (Chen et al., SEED_CHECKLIST F-23): a hash sends each of the ``n·units``
    connections to one of ``num_buckets`` shared parameters ``w``; the sign hash ``ξ ∈ {±1}``
    makes collisions cancel in expectation. The hash (see :func:`hashed_dense_index`) is a
    fixed deterministic function of ``(i, j, seed)``, recomputed at build time, so only ``w``
    and ``b`` are stored and a saved model reloads identically. Gradients for a bucket sum
    over its connections. Same computation in training and inference.

    Args:
        units: output size.
        num_buckets: number of real parameters ``K`` (compression ``n·units / K``).
        use_sign_hash: multiply by ``ξ(i, j)`` (default True).
        seed: hash seed (non-negative int).
        activation, use_bias, bias_initializer: as in Dense.
        kernel_initializer: initializer of ``w`` (default Glorot-uniform of the virtual
            ``(n, units)`` matrix, so the output scale matches a Dense layer).

    Example:
        >>> layer = HashedDense(128, num_buckets=2048, seed=7)
        >>> layer(keras.ops.ones((2, 256))).shape   # 2048 weights for 256·128 connections
        (2, 128)
    """

    def __init__(self, units, num_buckets, use_sign_hash=True, seed=0, activation=None,
                 use_bias=True, kernel_initializer=None, bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.units = _positive_int(units, "units")
        self.num_buckets = _positive_int(num_buckets, "num_buckets")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.seed = int(seed)
        self.use_sign_hash = bool(use_sign_hash)
        self.kernel_initializer = (keras.initializers.get(kernel_initializer)
                                   if kernel_initializer is not None else None)
        self._init_head(activation, use_bias, bias_initializer)

    def build(self, input_shape):
        n = _last_dim(input_shape, "HashedDense")
        limit = math.sqrt(6.0 / (n + self.units))
        initializer = self.kernel_initializer or keras.initializers.RandomUniform(-limit, limit)
        self.kernel = self.add_weight(name="kernel", shape=(self.num_buckets,),
                                      initializer=initializer)
        index, sign = hashed_dense_index(n, self.units, self.num_buckets, self.seed)
        self._index = index
        self._sign = sign if self.use_sign_hash else np.ones_like(sign)
        self._add_bias(self.units)
        self.built = True

    def virtual_kernel(self):
        """The ``(n, units)`` matrix ``V`` in the compute dtype."""
        weights = ops.take(ops.cast(self.kernel, self.compute_dtype), self._index, axis=0)
        return weights * ops.cast(self._sign, self.compute_dtype)

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        return self._finish(ops.matmul(x, self.virtual_kernel()))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        config = super().get_config()
        config.update({"units": self.units, "num_buckets": self.num_buckets,
                       "use_sign_hash": self.use_sign_hash, "seed": self.seed,
                       "kernel_initializer":
                           keras.saving.serialize_keras_object(self.kernel_initializer),
                       **self._head_config()})
        return config
