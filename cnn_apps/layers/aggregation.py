"""Aggregation (global, orderless) pooling from the CNN literature (survey S0 §3.2.5-3.2.6, §5.1).

``SpatialPyramidPooling2D`` (SPP-net, P-09), ``VLADPooling`` (NetVLAD-style trainable VLAD,
P-10/P-17), ``BilinearPooling`` (bilinear CNN, P-16), and the multi-scale orderless pooling
feature extractor ``multiscale_orderless_features`` (MOP, Gong et al., P-10) with its
hard-assignment helpers ``vlad_encode`` and ``fit_vlad_centers``.
The names are re-exported by ``cnn_apps.layers.pooling``.
"""

import keras
import numpy as np
from keras import ops

__all__ = ["SpatialPyramidPooling2D", "VLADPooling", "BilinearPooling", "vlad_encode",
           "fit_vlad_centers", "multiscale_orderless_features"]


def _check_data_format(data_format, owner):
    if data_format is None:
        data_format = keras.config.image_data_format()
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError(f"{owner}: `data_format` must be 'channels_last' or 'channels_first', "
                         f"got {data_format!r}.")
    return data_format


def _channels_last(x, data_format):
    if data_format == "channels_first":
        return ops.transpose(x, (0, *range(2, len(x.shape)), 1))
    return x


def _l2_normalize(x, axis, epsilon):
    return x / ops.sqrt(ops.sum(ops.square(x), axis=axis, keepdims=True) + epsilon)


@keras.saving.register_keras_serializable(package="cnn_apps")
class SpatialPyramidPooling2D(keras.layers.Layer):
    """Spatial pyramid pooling (He et al., SPP-net): a fixed-length vector for any input size.

    Survey S0 §3.2.5, SEED_CHECKLIST P-09. For each pyramid level b the H×W map is split into
    b×b bins; bin (i, j) covers rows ⌊i·H/b⌋ .. ⌈(i+1)·H/b⌉ − 1 and columns ⌊j·W/b⌋ ..
    ⌈(j+1)·W/b⌉ − 1 (the SPP-net window rule), and is max- or average-pooled per channel.
    The output has length C·Σ b² whatever H and W are, ordered level by level, bins row-major,
    channels innermost. Inputs may have a dynamic spatial size (``Input((None, None, C))``);
    maps smaller than the largest bin still work (neighbouring bins then share pixels).
    Training and inference are identical. Speed: max levels are read off the finest grid;
    uneven bins (H or W not divisible by b) take 2b slice reductions, ~5× slower than
    ``GlobalMaxPooling2D`` on TF CPU without XLA and on par with ``jit_compile=True``.

    Args:
        bins: pyramid levels, positive ints, e.g. (1, 2, 4) → 21 bins.
        mode: "max" (SPP-net) or "avg".
        data_format: "channels_last" (default) or "channels_first".

    Example:
        >>> x = keras.random.normal((2, 13, 9, 8))
        >>> tuple(SpatialPyramidPooling2D(bins=(1, 2, 4))(x).shape)   # 8 · (1 + 4 + 16)
        (2, 168)
    """

    def __init__(self, bins=(1, 2, 4), mode="max", data_format=None, **kwargs):
        super().__init__(**kwargs)
        bins = (bins,) if isinstance(bins, int) else bins
        if (not isinstance(bins, (list, tuple)) or not bins or not all(
                isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in bins)):
            raise ValueError(f"SpatialPyramidPooling2D: `bins` must be a non-empty sequence of "
                             f"positive ints, got {bins!r}.")
        if mode not in ("max", "avg"):
            raise ValueError(f"SpatialPyramidPooling2D: `mode` must be 'max' or 'avg', "
                             f"got {mode!r}.")
        self.bins, self.mode = tuple(bins), mode
        self.data_format = _check_data_format(data_format, "SpatialPyramidPooling2D")

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(f"SpatialPyramidPooling2D: expected a 4D input, got shape "
                             f"{input_shape}.")

    def compute_output_shape(self, input_shape):
        channels = input_shape[3] if self.data_format == "channels_last" else input_shape[1]
        total = None if channels is None else channels * sum(b * b for b in self.bins)
        return (input_shape[0], total)

    def _grid(self, x, b, height, width, reduce):
        """(B, b, b, C): the level-b bins pooled directly from the map."""
        if isinstance(height, int) and isinstance(width, int) and not (height % b or width % b):
            # Equal bins: one reshape and one reduction.
            grid = ops.reshape(x, (-1, b, height // b, b, width // b, x.shape[-1]))
            return reduce(grid, axis=(2, 4))
        # Uneven bins: the max (mean) over a rectangle is the max (mean) over its rows of the
        # per-row max (mean) over its columns, so 2b slices replace b² (means stay exact:
        # every row of a bin has the same number of columns).
        columns = ops.stack([reduce(x[:, :, (j * width) // b:((j + 1) * width + b - 1) // b, :],
                                    axis=2) for j in range(b)], axis=2)          # (B, H, b, C)
        return ops.stack([reduce(columns[:, (i * height) // b:((i + 1) * height + b - 1) // b],
                                 axis=1) for i in range(b)], axis=1)

    def call(self, inputs):
        x = _channels_last(ops.cast(inputs, self.compute_dtype), self.data_format)
        shape = ops.shape(x)
        height, width, channels = shape[1], shape[2], x.shape[-1]
        reduce = ops.max if self.mode == "max" else ops.mean
        # Bin i of level b is exactly the union of bins m·i .. m·i+m−1 of level m·b (the
        # floor/ceil edges coincide), so a coarser max level is read off a finer grid instead
        # of the whole map. Means may reuse a grid only when its bins are equal-sized.
        equal = isinstance(height, int) and isinstance(width, int)
        grids = {}
        for b in sorted(set(self.bins), reverse=True):
            finer = [f for f in grids if f % b == 0 and (
                self.mode == "max" or (equal and not (height % f or width % f)))]
            if finer:
                f = min(finer)
                grid = ops.reshape(grids[f], (-1, b, f // b, b, f // b, channels))
                grids[b] = reduce(grid, axis=(2, 4))
            else:
                grids[b] = self._grid(x, b, height, width, reduce)
        levels = [ops.reshape(grids[b], (-1, b * b * channels)) for b in self.bins]
        return ops.concatenate(levels, axis=-1) if len(levels) > 1 else levels[0]

    def get_config(self):
        config = super().get_config()
        config.update(bins=self.bins, mode=self.mode, data_format=self.data_format)
        return config


@keras.saving.register_keras_serializable(package="cnn_apps")
class VLADPooling(keras.layers.Layer):
    """Trainable VLAD (NetVLAD-style) aggregation of local descriptors into one vector.

    SEED_CHECKLIST P-17 (VLAD aggregation of CNN features) and P-10 (the VLAD stage of MOP,
    survey S0 §3.2.6), made end-to-end trainable as in NetVLAD (Arandjelović et al.). For
    descriptors x_i (every spatial location of a ``(B, H, W, D)`` map, or every row of
    ``(B, N, D)``), optionally L2-normalized first:
        a_k(x_i) = softmax_k(w_kᵀ x_i + b_k)            (learned 1×1 conv assignment)
        V[k, :]  = Σ_i a_k(x_i) · (x_i − c_k)            (residuals to learned centres c_k)
        V[k, :] ← V[k, :] / ‖V[k, :]‖                     (intra-normalization)
        v        = vec(V) / ‖vec(V)‖                      (L2 normalization), length K·D
    Training and inference are identical. ``set_centers`` loads k-means centres with the
    NetVLAD initialization w_k = 2α·c_k, b_k = −α‖c_k‖², which tends to hard-assignment VLAD
    (``vlad_encode``) as α grows. Speed: a 1×1 conv to K logits, a softmax and a (K×N)·(N×D)
    product are about 2K times the work of an average, so it runs ~8-15× slower than
    ``GlobalAveragePooling2D`` (its benchmark peer) for K = 8.

    Args:
        num_clusters: K, a positive int.
        normalize_input: L2-normalize each descriptor before assignment (NetVLAD default).
        epsilon: added under the square roots of the normalizations.
        kernel_initializer, centers_initializer: initializers of w and c.

    Example:
        >>> x = keras.random.normal((2, 7, 7, 16))
        >>> tuple(VLADPooling(num_clusters=8)(x).shape)
        (2, 128)
    """

    def __init__(self, num_clusters, normalize_input=True, epsilon=1e-12,
                 kernel_initializer="glorot_uniform", centers_initializer="random_uniform",
                 **kwargs):
        super().__init__(**kwargs)
        if isinstance(num_clusters, bool) or not isinstance(num_clusters, int) or num_clusters < 1:
            raise ValueError(f"VLADPooling: `num_clusters` must be a positive int, "
                             f"got {num_clusters!r}.")
        if not epsilon > 0:
            raise ValueError(f"VLADPooling: `epsilon` must be > 0, got {epsilon!r}.")
        self.num_clusters, self.normalize_input = num_clusters, bool(normalize_input)
        self.epsilon = float(epsilon)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.centers_initializer = keras.initializers.get(centers_initializer)

    def build(self, input_shape):
        if len(input_shape) not in (3, 4) or input_shape[-1] is None:
            raise ValueError(f"VLADPooling: expected (batch, N, D) or (batch, H, W, D) with a "
                             f"known D, got shape {input_shape}.")
        dim = input_shape[-1]
        self.assignment_kernel = self.add_weight(
            shape=(dim, self.num_clusters), initializer=self.kernel_initializer,
            name="assignment_kernel")
        self.assignment_bias = self.add_weight(shape=(self.num_clusters,),
                                               initializer="zeros", name="assignment_bias")
        self.centers = self.add_weight(shape=(self.num_clusters, dim),
                                       initializer=self.centers_initializer, name="centers")

    def set_centers(self, centers, alpha=100.0):
        """Load ``(K, D)`` centres and set the assignment to NetVLAD's soft nearest-centre."""
        centers = np.asarray(centers, dtype="float32")
        if centers.shape != tuple(self.centers.shape):
            raise ValueError(f"VLADPooling.set_centers: `centers` must have shape "
                             f"{tuple(self.centers.shape)}, got {centers.shape}.")
        self.centers.assign(centers)
        self.assignment_kernel.assign(2.0 * alpha * centers.T)
        self.assignment_bias.assign(-alpha * np.sum(centers ** 2, axis=1))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_clusters * input_shape[-1])

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        dim = x.shape[-1]
        x = ops.reshape(x, (ops.shape(x)[0], -1, dim))
        if self.normalize_input:
            x = _l2_normalize(x, -1, self.epsilon)
        assignment = ops.softmax(ops.matmul(x, self.assignment_kernel) + self.assignment_bias,
                                 axis=-1)                                        # (B, N, K)
        residuals = (ops.einsum("bnk,bnd->bkd", assignment, x)
                     - ops.expand_dims(ops.sum(assignment, axis=1), -1) * self.centers)
        residuals = _l2_normalize(residuals, -1, self.epsilon)
        return _l2_normalize(ops.reshape(residuals, (-1, self.num_clusters * dim)), -1,
                             self.epsilon)

    def get_config(self):
        config = super().get_config()
        config.update(num_clusters=self.num_clusters, normalize_input=self.normalize_input,
                      epsilon=self.epsilon,
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
                      centers_initializer=keras.initializers.serialize(
                          self.centers_initializer))
        return config


@keras.saving.register_keras_serializable(package="cnn_apps")
class BilinearPooling(keras.layers.Layer):
    """Bilinear pooling (Lin et al., bilinear CNN): pooled outer products of two feature maps.

    Survey S0 §5.1, SEED_CHECKLIST P-16. For maps a (B, H, W, Cₐ) and b (B, H, W, C_b) of equal
    spatial size (or one map a, then b = a: "self bilinear"):
        Z = (1 / HW) · Σ_{locations l} a_l ⊗ b_l        (Cₐ × C_b, flattened row-major)
        z ← sign(Z) · √(|Z| + ε)                         (signed square root)
        z ← z / √(‖z‖² + ε)                              (L2 normalization)
    The outer products are *averaged* over locations; because the signed square root is
    positively homogeneous and the L2 normalization removes scale, summing instead gives the
    same output (up to ε) while averaging keeps intermediate values independent of H·W. ε keeps
    the square root's gradient finite at 0. Training and inference are identical. Speed: a
    Cₐ×C_b outer product per location is Cₐ·C_b/C times the work of an average, hence
    ~2.5-5× ``GlobalAveragePooling2D`` at C = 16.

    Args:
        epsilon: the ε above.
        data_format: "channels_last" (default) or "channels_first".

    Example:
        >>> a, b = keras.random.normal((2, 7, 7, 8)), keras.random.normal((2, 7, 7, 4))
        >>> tuple(BilinearPooling()([a, b]).shape)
        (2, 32)
    """

    def __init__(self, epsilon=1e-12, data_format=None, **kwargs):
        super().__init__(**kwargs)
        if not epsilon > 0:
            raise ValueError(f"BilinearPooling: `epsilon` must be > 0, got {epsilon!r}.")
        self.epsilon = float(epsilon)
        self.data_format = _check_data_format(data_format, "BilinearPooling")

    def _shapes(self, input_shape):
        two = isinstance(input_shape, (list, tuple)) and len(input_shape) > 0 and isinstance(
            input_shape[0], (list, tuple))
        shapes = list(input_shape) if two else [input_shape]
        if len(shapes) not in (1, 2):
            raise ValueError(f"BilinearPooling: expected one feature map or a list of two, got "
                             f"{len(shapes)} inputs.")
        if self.data_format == "channels_first":
            shapes = [(s[0], *s[2:], s[1]) for s in shapes]
        return shapes

    def build(self, input_shape):
        shapes = self._shapes(input_shape)
        for s in shapes:
            if len(s) < 3 or s[-1] is None:
                raise ValueError(f"BilinearPooling: each input must be (batch, ..., channels) "
                                 f"with known channels, got {s}.")
        if len(shapes) == 2:
            for u, v in zip(shapes[0][1:-1], shapes[1][1:-1]):
                if u is not None and v is not None and u != v:
                    raise ValueError(f"BilinearPooling: the two inputs must have the same "
                                     f"spatial size, got {shapes[0]} and {shapes[1]}.")

    def compute_output_shape(self, input_shape):
        shapes = self._shapes(input_shape)
        return (shapes[0][0], shapes[0][-1] * shapes[-1][-1])

    def call(self, inputs):
        maps = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        maps = [_channels_last(ops.cast(m, self.compute_dtype), self.data_format) for m in maps]
        flat = [ops.reshape(m, (ops.shape(m)[0], -1, m.shape[-1])) for m in maps]
        first, second = flat[0], flat[-1]
        locations = ops.cast(ops.shape(first)[1], self.compute_dtype)
        outer = ops.einsum("bni,bnj->bij", first, second) / locations
        outer = ops.reshape(outer, (-1, first.shape[-1] * second.shape[-1]))
        signed_root = ops.sign(outer) * ops.sqrt(ops.abs(outer) + self.epsilon)
        return _l2_normalize(signed_root, -1, self.epsilon)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon,
                "data_format": self.data_format}


# ----------------------------------------------------------------------------- MOP (numpy)
def vlad_encode(descriptors, centers, epsilon=1e-12):
    """Hard-assignment VLAD (Jégou et al.) of one set of descriptors, as used by MOP.

    ``descriptors`` (N, D), ``centers`` (K, D) → (K·D,) float32: each descriptor's residual
    x_i − c_k is added to its nearest centre k (Euclidean); each centre's block is then
    L2-normalized (intra-normalization; an empty block stays 0) and the whole vector is
    L2-normalized. Same normalizations as ``VLADPooling``, with a hard assignment.
    """
    x = np.asarray(descriptors, dtype="float64")
    c = np.asarray(centers, dtype="float64")
    if x.ndim != 2 or c.ndim != 2 or x.shape[1] != c.shape[1]:
        raise ValueError(f"vlad_encode: `descriptors` (N, D) and `centers` (K, D) must share D, "
                         f"got {x.shape} and {c.shape}.")
    distances = np.sum(x ** 2, 1)[:, None] - 2.0 * x @ c.T + np.sum(c ** 2, 1)[None, :]
    nearest = np.argmin(distances, axis=1)
    residuals = np.zeros_like(c)
    np.add.at(residuals, nearest, x - c[nearest])
    residuals /= np.sqrt(np.sum(residuals ** 2, axis=1, keepdims=True) + epsilon)
    flat = residuals.reshape(-1)
    return (flat / np.sqrt(np.sum(flat ** 2) + epsilon)).astype("float32")


def fit_vlad_centers(descriptors, num_clusters, iterations=10, seed=0):
    """k-means centres by Lloyd's algorithm: ``(N, D)`` → ``(num_clusters, D)`` float32.

    Deterministic for a given ``seed``: the centres start at ``num_clusters`` distinct
    descriptors drawn without replacement; a centre that loses all its points keeps its place.
    """
    x = np.asarray(descriptors, dtype="float64")
    if x.ndim != 2:
        raise ValueError(f"fit_vlad_centers: `descriptors` must be (N, D), got {x.shape}.")
    if isinstance(num_clusters, bool) or not isinstance(num_clusters, int) or not (
            1 <= num_clusters <= len(x)):
        raise ValueError(f"fit_vlad_centers: `num_clusters` must be an int in [1, N={len(x)}], "
                         f"got {num_clusters!r}.")
    rng = np.random.default_rng(seed)
    centers = x[rng.choice(len(x), size=num_clusters, replace=False)].copy()
    for _ in range(iterations):
        distances = np.sum(x ** 2, 1)[:, None] - 2.0 * x @ centers.T + np.sum(centers ** 2, 1)
        nearest = np.argmin(distances, axis=1)
        for k in range(num_clusters):
            members = x[nearest == k]
            if len(members):
                centers[k] = members.mean(axis=0)
    return centers.astype("float32")


def _patch_starts(size, patch, stride):
    starts = list(range(0, size - patch + 1, stride))
    return starts if starts[-1] == size - patch else starts + [size - patch]


def _describe(backbone, batch, batch_size):
    """Backbone activations of an image batch as (N, D) vectors (maps are average-pooled).

    Resizes and predicts chunk by chunk, so memory stays bounded by ``batch_size`` images.
    """
    target = tuple(backbone.input_shape[1:3])
    chunks = []
    for start in range(0, len(batch), batch_size):
        chunk = batch[start:start + batch_size]
        if None not in target and tuple(chunk.shape[1:3]) != target:
            chunk = keras.ops.convert_to_numpy(ops.image.resize(chunk, target))
        features = np.asarray(backbone.predict_on_batch(chunk))
        chunks.append(features.reshape(len(features), -1, features.shape[-1]).mean(axis=1))
    return np.concatenate(chunks).astype("float32")


def multiscale_orderless_features(backbone, images, scales=(1.0, 0.5, 0.25), centers=None,
                                  num_clusters=16, stride_fraction=0.25, lloyd_iterations=10,
                                  seed=0, batch_size=32, return_centers=False):
    """Multi-scale orderless pooling (MOP, Gong et al. 2014) image descriptors.

    Survey S0 §3.2.6, SEED_CHECKLIST P-10 / T-CLS-06. Level 0 (``scales[0]`` must be 1.0) is the
    backbone's global activation vector of the whole image. Each finer scale s < 1 cuts square
    patches of side round(s·min(H, W)) with stride max(1, round(side·stride_fraction)) (Gong:
    128- and 64-pixel patches at strides 32 and 16 on 256-pixel images, i.e. 1/4; the last
    patch of each row/column is aligned to the border), runs the backbone on every patch
    (resized to the backbone's input size when it has one; feature maps are average-pooled)
    and encodes the patch vectors with hard-assignment VLAD (``vlad_encode``). The output
    concatenates [global, VLAD(scale 2), VLAD(scale 3), ...]: length D + (levels − 1)·K·D.
    Gong et al.'s PCA reductions are not applied (do them on the output if wanted).

    Args:
        backbone: a ``keras.Model`` mapping images to vectors (N, D) or maps (N, h, w, D).
        images: array (N, H, W, C).
        scales: 1.0 followed by the patch scales, each in (0, 1).
        centers: None (fit them per level by Lloyd's k-means on these images' patch vectors)
            or a list with one (K, D) array per patch level, e.g. fitted on training images.
        num_clusters, lloyd_iterations, seed: k-means settings when ``centers`` is None.
        stride_fraction: patch stride as a fraction of the patch side.
        batch_size: backbone batch size.
        return_centers: also return the list of per-level centres.

    Returns:
        float32 array (N, D + (levels − 1)·K·D), and the centres if ``return_centers``.
        Deterministic for fixed inputs, centres / seed.

    Example:
        >>> features, centers = multiscale_orderless_features(net, train_images,
        ...                                                   return_centers=True)
        >>> test_features = multiscale_orderless_features(net, test_images, centers=centers)
    """
    images = np.asarray(images, dtype="float32")
    if images.ndim != 4:
        raise ValueError(f"multiscale_orderless_features: `images` must be (N, H, W, C), got "
                         f"shape {images.shape}.")
    scales = tuple(float(s) for s in scales)
    if not scales or scales[0] != 1.0 or not all(0.0 < s < 1.0 for s in scales[1:]):
        raise ValueError(f"multiscale_orderless_features: `scales` must start with 1.0 and "
                         f"continue with values in (0, 1), got {scales!r}.")
    if not 0.0 < stride_fraction <= 1.0:
        raise ValueError(f"multiscale_orderless_features: `stride_fraction` must be in (0, 1], "
                         f"got {stride_fraction!r}.")
    if centers is not None and len(centers) != len(scales) - 1:
        raise ValueError(f"multiscale_orderless_features: `centers` needs one (K, D) array per "
                         f"patch level ({len(scales) - 1}), got {len(centers)}.")
    height, width = images.shape[1:3]
    levels = [_describe(backbone, images, batch_size)]
    fitted = []
    for level, scale in enumerate(scales[1:]):
        side = max(1, int(round(scale * min(height, width))))
        stride = max(1, int(round(side * stride_fraction)))
        corners = [(top, left) for top in _patch_starts(height, side, stride)
                   for left in _patch_starts(width, side, stride)]
        # One image at a time: all patches of all images at once would not fit in memory.
        vectors = [_describe(backbone, np.stack([image[top:top + side, left:left + side]
                                                 for top, left in corners]), batch_size)
                   for image in images]
        level_centers = (fit_vlad_centers(np.concatenate(vectors), num_clusters,
                                          lloyd_iterations, seed)
                         if centers is None else np.asarray(centers[level], "float32"))
        fitted.append(level_centers)
        levels.append(np.stack([vlad_encode(v, level_centers) for v in vectors]))
    features = np.concatenate(levels, axis=1).astype("float32")
    return (features, fitted) if return_centers else features
