"""Low-rank factorization of trained Dense and Conv2D layers (survey S0 §4.2).

Dense (SEED_CHECKLIST F-03/F-04; Sainath et al., Xue et al.): the kernel ``W (n×m)`` is
replaced by its truncated SVD ``W ≈ U_r Σ_r V_rᵀ``, computed as a :class:`LowRankDense` with
``A = U_r Σ_r`` and ``B = V_rᵀ``. By Eckart–Young this is the best rank-``r`` approximation:
``‖W − A·B‖_F² = Σ_{i>r} σ_i²``. Parameters drop from ``n·m`` to ``r·(n + m)``.

Conv2D (F-05; Denton et al., Jaderberg et al.), two schemes:

* ``"channel"``: the kernel reshaped to ``M ((kh·kw·C) × F)`` is factorized; the layer becomes
  a ``kh×kw`` conv with ``r`` filters (``U_r Σ_r``) followed by a ``1×1`` conv with ``F``
  filters (``V_rᵀ``), bias and activation. Cost ``r·(kh·kw·C + F)``.
* ``"spatial"`` (Jaderberg et al. scheme 2): ``K[y, x, c, f] ≈ Σ_r V[y, c, r]·H[x, r, f]``, the
  SVD of ``K`` arranged as a ``(kh·C) × (kw·F)`` matrix; the layer becomes a ``kh×1`` conv with
  ``r`` filters then a ``1×kw`` conv with ``F`` filters. Cost ``r·(kh·C + kw·F)``. Exact for
  "valid" and "same" padding and any stride (padding and stride separate per axis).

The rank is ``rank`` when given, else the smallest ``r`` whose singular values keep at least
``energy`` of ``Σσ²``; with ``param_ratio`` the energy level is the largest one whose ranks keep
the factorized layers within that fraction of their weights in total. With an automatic rank,
a layer whose factorization would not save weights is kept as it is; an explicit ``rank`` is
always applied (full rank reproduces the layer).
"""

from __future__ import annotations

import keras
import numpy as np

from cnn_apps.compression._graph import check_model, rebuild

CONV_MODES = ("channel", "spatial", None)


def choose_rank(singular_values, full_params, params_per_rank, rank=None, energy=0.9,
                param_ratio=None) -> int:
    """The rank used for one matrix (see the module docstring for the rules)."""
    s2 = np.asarray(singular_values, dtype=np.float64) ** 2
    max_rank = len(s2)
    if rank is not None:
        return int(min(rank, max_rank))
    if param_ratio is not None:
        return int(max(1, min(max_rank, np.floor(param_ratio * full_params / params_per_rank))))
    total = s2.sum()
    if total <= 0:
        return 1
    kept = np.cumsum(s2) / total
    return int(min(max_rank, np.searchsorted(kept, energy - 1e-12) + 1))


def truncated_svd(matrix, rank):
    """``(A, B)`` with ``A = U_r Σ_r``, ``B = V_rᵀ`` (float32) and the singular values."""
    u, s, vt = np.linalg.svd(np.asarray(matrix, dtype=np.float64), full_matrices=False)
    return (u[:, :rank] * s[:rank]).astype("float32"), vt[:rank].astype("float32"), s


def factorize(model, rank=None, energy=0.9, param_ratio=None, conv="channel", layers=None,
              dense=True):
    """A new model with Dense / Conv2D layers replaced by low-rank factorizations.

    Args:
        model: a built Functional model (nested Functional backbones are searched too).
        rank: fixed rank for every factorized layer (``None``: from ``energy`` or
            ``param_ratio``).
        energy: fraction of ``Σσ²`` to keep when ``rank`` and ``param_ratio`` are ``None``.
        param_ratio: target fraction of each layer's weights (e.g. 0.4), used when ``rank`` is
            ``None``.
        conv: ``"channel"``, ``"spatial"`` or ``None`` (leave Conv2D layers alone).
        layers: optional names of the layers to factorize (default: all eligible).
        dense: factorize Dense layers.

    Training and inference are unchanged apart from the approximation; with full rank the
    outputs equal the original's up to float rounding. Returns the new model; the original is
    untouched.

    Example:
        >>> small = factorize(model, param_ratio=0.4, conv=None)
        >>> small.count_params() < model.count_params()
        True
    """
    check_model(model)
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, (int, np.integer))
                             or rank < 1):
        raise ValueError(f"rank must be a positive integer or None, got {rank!r}")
    if not 0.0 < float(energy) <= 1.0:
        raise ValueError(f"energy must be in (0, 1], got {energy!r}")
    if param_ratio is not None and not 0.0 < float(param_ratio) < 1.0:
        raise ValueError(f"param_ratio must be in (0, 1) or None, got {param_ratio!r}")
    if conv not in CONV_MODES:
        raise ValueError(f"conv must be one of {CONV_MODES}, got {conv!r}")
    names = None if layers is None else set(layers)
    options = {"rank": rank, "energy": float(energy), "param_ratio": None}
    if rank is None and param_ratio is not None:
        options["energy"] = _energy_for_budget(model, names, dense, conv, float(param_ratio))

    def replace(layer, x, **kwargs):
        if names is not None and layer.name not in names:
            return None
        if dense and type(layer) is keras.layers.Dense:
            return _factorize_dense(layer, x, options)
        if conv and type(layer) is keras.layers.Conv2D and layer.groups == 1:
            return _factorize_conv(layer, x, conv, options)
        return None

    return rebuild(model, replace)


def _candidate_spectra(model, names, dense, conv):
    """``[(singular values, kernel size, params per rank, bias size)]`` of the layers to
    factorize."""
    from cnn_apps.compression._graph import iter_layers

    found = []
    for layer in iter_layers(model):
        if names is not None and layer.name not in names:
            continue
        if dense and type(layer) is keras.layers.Dense:
            kernel = layer.kernel.numpy()
            found.append((np.linalg.svd(kernel.astype(np.float64), compute_uv=False),
                          kernel.size, sum(kernel.shape), layer.units * layer.use_bias))
        elif conv and type(layer) is keras.layers.Conv2D and layer.groups == 1:
            kernel = layer.kernel.numpy()
            kh, kw, c, f = kernel.shape
            matrix = (kernel.reshape(kh * kw * c, f) if conv == "channel"
                      else kernel.transpose(0, 2, 1, 3).reshape(kh * c, kw * f))
            found.append((np.linalg.svd(matrix.astype(np.float64), compute_uv=False),
                          kernel.size, kh * kw * c + f if conv == "channel" else kh * c + kw * f,
                          f * layer.use_bias))
    return found


def _energy_for_budget(model, names, dense, conv, param_ratio):
    """The largest shared energy level whose per-layer ranks keep the factorized layers
    within ``param_ratio`` of their parameters (kernels + biases) in total (ranks follow each layer's spectrum, so
    a small classifier keeps the rank it needs instead of a uniform cut)."""
    spectra = _candidate_spectra(model, names, dense, conv)
    if not spectra:
        return 0.9
    # biases stay as they are but count in the layers' parameters
    biases = sum(bias for *_, bias in spectra)
    budget = param_ratio * (sum(full for _, full, _, _ in spectra) + biases) - biases

    def cost(energy):
        total = 0
        for s, full, per_rank, _ in spectra:
            r = choose_rank(s, full, per_rank, energy=energy)
            total += min(full, r * per_rank)
        return total

    low, high = 0.0, 1.0
    for _ in range(40):
        mid = (low + high) / 2
        low, high = (mid, high) if cost(mid) <= budget else (low, mid)
    return max(low, 1e-6)


def _factorize_dense(layer, x, options):
    from cnn_apps.layers.structured import LowRankDense

    kernel = layer.kernel.numpy()
    n, m = kernel.shape
    s = np.linalg.svd(kernel.astype(np.float64), compute_uv=False)
    r = choose_rank(s, n * m, n + m, **options)
    if options["rank"] is None and r * (n + m) >= n * m:
        return None
    a, b, _ = truncated_svd(kernel, r)
    new = LowRankDense(layer.units, r, activation=layer.activation, use_bias=layer.use_bias,
                       name=layer.name, dtype=layer.dtype_policy)
    out = new(x)
    new.set_weights([a, b] + ([layer.bias.numpy()] if layer.use_bias else []))
    return out


def _factorize_conv(layer, x, mode, options):
    kernel = layer.kernel.numpy()
    kh, kw, c, f = kernel.shape
    common = {"dtype": layer.dtype_policy, "padding": layer.padding}
    if mode == "channel":
        matrix = kernel.reshape(kh * kw * c, f)
        per_rank = kh * kw * c + f
        s = np.linalg.svd(matrix.astype(np.float64), compute_uv=False)
        r = choose_rank(s, matrix.size, per_rank, **options)
        if options["rank"] is None and r * per_rank >= matrix.size:
            return None
        a, b, _ = truncated_svd(matrix, r)
        first = keras.layers.Conv2D(r, (kh, kw), strides=layer.strides, use_bias=False,
                                    dilation_rate=layer.dilation_rate,
                                    name=f"{layer.name}_basis", **common)
        second = keras.layers.Conv2D(f, 1, activation=layer.activation, use_bias=layer.use_bias,
                                     name=layer.name, **common)
        first_kernel, second_kernel = a.reshape(kh, kw, c, r), b.reshape(1, 1, r, f)
    else:
        # rows (y, c), columns (x, f): K[y, x, c, f] = M[y·C + c, x·F + f]
        matrix = kernel.transpose(0, 2, 1, 3).reshape(kh * c, kw * f)
        per_rank = kh * c + kw * f
        s = np.linalg.svd(matrix.astype(np.float64), compute_uv=False)
        r = choose_rank(s, kernel.size, per_rank, **options)
        if options["rank"] is None and r * per_rank >= kernel.size:
            return None
        a, b, _ = truncated_svd(matrix, r)
        sy, sx = layer.strides
        dy, dx = layer.dilation_rate
        first = keras.layers.Conv2D(r, (kh, 1), strides=(sy, 1), dilation_rate=(dy, 1),
                                    use_bias=False, name=f"{layer.name}_vertical", **common)
        second = keras.layers.Conv2D(f, (1, kw), strides=(1, sx), dilation_rate=(1, dx),
                                     activation=layer.activation, use_bias=layer.use_bias,
                                     name=layer.name, **common)
        first_kernel = a.reshape(kh, c, r)[:, None]                        # (kh, 1, C, r)
        second_kernel = b.reshape(r, kw, f).transpose(1, 0, 2)[None]       # (1, kw, r, F)
    out = second(first(x))
    first.set_weights([first_kernel])
    second.set_weights([second_kernel] + ([layer.bias.numpy()] if layer.use_bias else []))
    return out
