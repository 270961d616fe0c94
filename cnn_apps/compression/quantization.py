"""k-means weight quantization: scalar, vector and product quantization (survey S0 §4.4).

Gong et al. (SEED_CHECKLIST F-15..F-17) compress a weight matrix ``W`` (``n`` rows of length
``m``; a Conv2D kernel is read as ``(kh·kw·C) × F``) with k-means codebooks:

* ``"scalar"``: one 1-D codebook of ``k = 2^bits`` values per layer; every weight stores a
  ``bits``-bit code. Storage ``n·m·log2 k + 32·k`` bits.
* ``"vq"``: rows are vectors, one codebook of ``k`` rows of length ``m``. Storage
  ``n·log2 k + 32·k·m``.
* ``"pq"`` (product quantization, best in Gong et al.): each row is split into ``s``
  sub-vectors of length ``d = ⌈m/s⌉`` (the last padded with zeros), with a separate codebook
  of ``k`` centroids per sub-space. Storage ``n·s·log2 k + 32·s·k·d``.

The compression ratio is ``32·n·m`` over that storage (biases stay float and are not
counted). The returned model holds the decoded weights ``codebook[codes]``, so it runs and
fine-tunes like the original; k-means is scikit-learn's ``KMeans`` (k-means++, Lloyd).
"""

from __future__ import annotations

import math

import keras
import numpy as np

from cnn_apps.compression._graph import check_model, prunable_kernels, rebuild

METHODS = ("scalar", "vq", "pq")


def kmeans(points, clusters, seed=0):
    """``(codebook (k, d), codes (n,))`` of k-means on ``points (n, d)``; ``k`` is capped at
    the number of distinct points."""
    from sklearn.cluster import KMeans

    points = np.asarray(points, dtype=np.float64)
    distinct = len(np.unique(points, axis=0))
    k = int(min(clusters, distinct))
    if k == distinct:  # every point is its own centroid: exact, no k-means needed
        codebook, codes = np.unique(points, axis=0, return_inverse=True)
        return codebook.astype(np.float32), codes.reshape(-1).astype(np.int64)
    km = KMeans(n_clusters=k, n_init=1, random_state=seed, max_iter=100).fit(points)
    return km.cluster_centers_.astype(np.float32), km.labels_.astype(np.int64)


def code_bits(clusters: int) -> int:
    return max(1, math.ceil(math.log2(max(clusters, 2))))


def quantize_matrix(matrix, method, clusters, subvectors=None, seed=0):
    """Quantize one ``(n, m)`` matrix: ``(decoded, storage_bits, codebook, codes)``."""
    matrix = np.asarray(matrix, dtype=np.float32)
    n, m = matrix.shape
    bits = code_bits(clusters)
    if method == "scalar":
        codebook, codes = kmeans(matrix.reshape(-1, 1), clusters, seed)
        decoded = codebook[codes].reshape(n, m)
        return decoded, n * m * bits + 32 * codebook.size, codebook, codes.reshape(n, m)
    if method == "vq":
        codebook, codes = kmeans(matrix, clusters, seed)
        return codebook[codes], n * bits + 32 * codebook.size, codebook, codes
    width = math.ceil(m / subvectors)
    padded = np.zeros((n, width * subvectors), np.float32)
    padded[:, :m] = matrix
    decoded = np.empty_like(padded)
    codebooks, all_codes, storage = [], [], 0
    for j in range(subvectors):
        block = padded[:, j * width:(j + 1) * width]
        codebook, codes = kmeans(block, clusters, seed + j)
        decoded[:, j * width:(j + 1) * width] = codebook[codes]
        codebooks.append(codebook)
        all_codes.append(codes)
        storage += n * bits + 32 * codebook.shape[0] * width
    return decoded[:, :m], storage, codebooks, np.stack(all_codes, axis=1)


def quantize_weights(model, method="pq", bits=None, clusters=None, subvectors=None,
                     include_conv=False, layers=None, seed=0):
    """k-means quantize ``model``'s Dense kernels (and Conv kernels with ``include_conv``).

    Args:
        model: a built Functional model.
        method: ``"scalar"``, ``"vq"`` or ``"pq"``.
        bits: code bits (``clusters = 2^bits``); default 4 for scalar, 8 for vq and pq.
        clusters: number of centroids ``k`` per codebook (overrides ``bits``).
        subvectors: pq sub-vectors per row ``s`` (default: row length / 4, i.e. ``d = 4``).
        include_conv: also quantize Conv2D kernels.
        layers: optional names of the layers to quantize.
        seed: k-means seed.

    Returns ``(new_model, report)``; ``report["ratio"]`` is the compression ratio of the
    quantized kernels and ``report["layers"][name]`` gives each layer's shape, ``k``,
    storage bits, ratio and the mean squared error of the decoded weights.

    Example:
        >>> small, report = quantize_weights(model, "pq", clusters=16, subvectors=30)
        >>> report["ratio"] > 8
        True
    """
    check_model(model)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if bits is not None and (isinstance(bits, bool) or not isinstance(bits, (int, np.integer))
                             or not 1 <= bits <= 16):
        raise ValueError(f"bits must be an integer in 1..16, got {bits!r}")
    if clusters is not None and (isinstance(clusters, bool)
                                 or not isinstance(clusters, (int, np.integer)) or clusters < 2):
        raise ValueError(f"clusters must be an integer >= 2, got {clusters!r}")
    if subvectors is not None and (isinstance(subvectors, bool)
                                   or not isinstance(subvectors, (int, np.integer))
                                   or subvectors < 1):
        raise ValueError(f"subvectors must be a positive integer, got {subvectors!r}")
    k = int(clusters or 2 ** (bits or (4 if method == "scalar" else 8)))
    copy = rebuild(model)
    names = None if layers is None else set(layers)
    types = (keras.layers.Dense, keras.layers.Conv2D) if include_conv else (keras.layers.Dense,)
    report, total_bits, total_weights = {}, 0, 0
    for layer, kernel in prunable_kernels(copy, types):
        if names is not None and layer.name not in names:
            continue
        values = kernel.numpy()
        matrix = values.reshape(-1, values.shape[-1])
        s = 1
        if method == "pq":
            s = int(subvectors or max(1, matrix.shape[1] // 4))
            s = min(s, matrix.shape[1])
        decoded, storage, _, _ = quantize_matrix(matrix, method, k, s, seed)
        kernel.assign(decoded.reshape(values.shape).astype(values.dtype))
        report[layer.name] = {"shape": list(values.shape), "clusters": k, "subvectors": s,
                              "storage_bits": int(storage),
                              "ratio": float(32 * values.size / storage),
                              "mse": float(np.mean((decoded - matrix) ** 2))}
        total_bits += storage
        total_weights += values.size
    if not report:
        raise ValueError("model has no kernels to quantize"
                         + (f" among layers {sorted(names)}" if names else ""))
    return copy, {"method": method, "clusters": k, "ratio": float(32 * total_weights / total_bits),
                  "quantized_weights": int(total_weights), "storage_bits": int(total_bits),
                  "layers": report}
