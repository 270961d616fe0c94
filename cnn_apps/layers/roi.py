"""Region-of-interest feature pooling: Fast R-CNN RoI max pooling and RoIAlign.

Both layers are called as ``layer([feature_map, rois])`` with ``feature_map`` (B, H, W, C)
and ``rois`` (B, R, 4) normalized ``(ymin, xmin, ymax, xmax)`` (fractions of the feature
map's — equivalently the image's — height and width), and return (B, R, ph, pw, C).

Implementation note: both are written with ``keras.ops`` gathers and masks rather than
``tf.image.crop_and_resize`` because that op has no XLA kernel (``jit_compile=True`` fails
with "No registered 'CropAndResize' OpKernel for XLA_CPU_JIT", checked on TF 2.21); written
this way they also run on the JAX backend. ``tests/layers/test_roi.py`` checks RoIAlign2D
against ``tf.image.crop_and_resize`` with the coordinate mapping documented below. The
layers are built with ``autocast=False`` so the roi coordinates stay float32 under
``mixed_bfloat16`` (bf16 would move a box edge by up to ~0.4% of the image); the feature map
is cast to the compute dtype and the output has that dtype.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

__all__ = ["RoIPooling2D", "RoIAlign2D"]


def _pool_size(value, name="pool_size"):
    if isinstance(value, int):
        value = (value, value)
    value = tuple(value)
    if len(value) != 2 or not all(isinstance(v, int) and v > 0 for v in value):
        raise ValueError(f"`{name}` must be a positive int or a pair of positive ints "
                         f"(height, width); got {value}.")
    return value


class _RoIBase(keras.layers.Layer):
    """Shared input handling: ``[features (B, H, W, C), rois (B, R, 4)]``."""

    def __init__(self, pool_size=(7, 7), **kwargs):
        kwargs.pop("autocast", None)
        super().__init__(autocast=False, **kwargs)
        self.pool_size = _pool_size(pool_size)

    def _check_shapes(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) != 2 or not all(
                isinstance(s, (list, tuple)) for s in input_shape):
            raise ValueError(f"{type(self).__name__} expects inputs [feature_map, rois]; got "
                             f"input shape {input_shape}.")
        features, rois = (tuple(s) for s in input_shape)
        if len(features) != 4:
            raise ValueError(f"`feature_map` must be (batch, height, width, channels); got "
                             f"{features}.")
        if len(rois) != 3 or rois[-1] != 4:
            raise ValueError(f"`rois` must be (batch, num_rois, 4) normalized (ymin, xmin, "
                             f"ymax, xmax); got {rois}.")
        return features, rois

    def build(self, input_shape):
        self._check_shapes(input_shape)
        self.built = True

    def compute_output_shape(self, input_shape):
        features, rois = self._check_shapes(input_shape)
        return (features[0], rois[1]) + self.pool_size + (features[3],)

    def _prepare(self, inputs):
        if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
            raise ValueError(f"{type(self).__name__} expects inputs [feature_map, rois].")
        features = ops.cast(inputs[0], self.compute_dtype)
        rois = ops.cast(inputs[1], "float32")
        shape = ops.shape(features)
        num_rois = ops.shape(rois)[1]
        flat_rois = ops.reshape(rois, (-1, 4))
        batch_index = ops.repeat(ops.arange(shape[0], dtype="int32"), num_rois)
        return features, flat_rois, batch_index, shape, num_rois

    def _finish(self, pooled, shape, num_rois):
        ph, pw = self.pool_size
        return ops.reshape(pooled, (-1, num_rois, ph, pw, shape[3]))

    def get_config(self):
        return {**super().get_config(), "pool_size": list(self.pool_size)}


@keras.saving.register_keras_serializable(package="cnn_apps")
class RoIPooling2D(_RoIBase):
    """Fast R-CNN RoI max pooling: fixed ph×pw output from a variable rectangle.

    RoI pooling is "a variant of max pooling, in which output size is fixed and input
    rectangle is a parameter" (seeds S3/S4, pooling layer; SEED_CHECKLIST P-11; the core of
    Fast R-CNN, survey S0 §5.2). With a feature map of H×W cells, a roi maps to the cells
    ``[y0, y1) = [⌊ymin·H + ½⌋, ⌊ymax·H + ½⌋)`` (rounded, as Fast R-CNN rounds its scaled
    pixel coordinates), of height ``h = max(y1 − y0, 1)``; likewise x. Output bin (i, j) is
    the maximum over rows ``[y0 + ⌊i·h/ph⌋, y0 + ⌈(i+1)·h/ph⌉)`` and columns
    ``[x0 + ⌊j·w/pw⌋, x0 + ⌈(j+1)·w/pw⌉)``, clipped to the map; neighbouring bins may share
    a row or column (floor/ceil edges) and a bin left empty by clipping outputs 0. Example
    from S3/S4: a 7-wide, 5-tall proposal pooled to 2×2 uses row bins of 3 and 3 rows
    (sharing one) and column bins of 4 and 4 columns (sharing one).

    Speed: with a static map size every bin is answered by a range-maximum query on a 2-D
    sparse table of the map (max over 2^a × 2^b windows; a bin of L rows is covered exactly
    by two windows of 2^⌊log2 L⌋ rows, likewise columns): 4 gathered cells per bin, about 9×
    faster than a masked pass per roi for 1024 rois on a 16×16 map. The table also records
    where each maximum lies, and the bins are read from the map at those cells, so the
    gradient is one scatter into the map (SPP-net's train step on ``shapes``: 285 → 174 ms;
    back-propagating through the table levels cost more than the rest of the step). With an
    unknown map size
    rois are processed one at a time (``keras.ops.map``), each with a masked max over its
    image's (pw, H, W, C) slab. Both give the same values and gradients.
    No gradient flows to the roi coordinates (they are rounded). Deterministic; no weights.

    Args:
        pool_size: output ``(ph, pw)`` or an int.

    Example::

        features = keras.Input((16, 16, 64)); rois = keras.Input((32, 4))
        pooled = RoIPooling2D(pool_size=(7, 7))([features, rois])   # (None, 32, 7, 7, 64)
        model = keras.Model([features, rois], pooled)
    """

    def _bin_masks(self, start, end, size, bins):
        """(N,) roi cell ranges → (N, bins, size) bool masks of each bin's cells."""
        extent = ops.maximum(end - start, 1.0)
        index = ops.arange(bins, dtype="float32")
        lo = ops.floor(index[None, :] * extent[:, None] / bins) + start[:, None]
        hi = ops.ceil((index[None, :] + 1.0) * extent[:, None] / bins) + start[:, None]
        size_f = ops.cast(size, "float32")
        lo = ops.clip(lo, 0.0, size_f)
        hi = ops.clip(hi, 0.0, size_f)
        cells = ops.arange(size, dtype="float32")[None, None, :]
        return ops.logical_and(cells >= lo[..., None], cells < hi[..., None])

    @staticmethod
    def _range_table(values, where, axis, levels):
        """``levels`` maps along ``axis``: level j holds the max of the 2^j cells starting at
        each position (cells past the end count as −inf) in ``values`` and, in ``where``,
        the map position of that max (the first of equal maxima)."""
        tables, positions = [values], [where]
        size = int(values.shape[axis])
        for j in range(1, levels):
            prev, prev_at, step = tables[-1], positions[-1], 2 ** (j - 1)
            if step >= size:
                tables.append(prev)
                positions.append(prev_at)
                continue
            pad = [[0, 0]] * len(prev.shape)
            pad[axis] = [0, step]
            later = ops.arange(step, size)
            shifted = ops.pad(ops.take(prev, later, axis=axis), pad,
                              constant_values=float("-inf"))
            shifted_at = ops.pad(ops.take(prev_at, later, axis=axis), pad)
            first = prev >= shifted
            tables.append(ops.where(first, prev, shifted))
            positions.append(ops.where(first, prev_at, shifted_at))
        return ops.stack(tables, axis=0), ops.stack(positions, axis=0)

    def _pool_sparse_table(self, features, row_masks, col_masks, batch_index):
        """Exact bin maxima from a 2-D sparse table (range-maximum query): a bin's row range
        [lo, hi) of length L is covered by the two windows of 2^⌊log2 L⌋ rows starting at lo
        and at hi − 2^⌊log2 L⌋ (likewise columns), so every bin is the max of 4 table cells,
        whatever its size: O(N·ph·pw·C) gathers instead of a masked pass over the map per roi.

        The table is built without gradient and also records where each maximum lies; the
        output is then gathered from the map at those cells, so the backward pass is one
        scatter of N·ph·pw·C values into the map (max pooling's gradient: to the arg max),
        not a pass back through every table level."""
        height, width = int(features.shape[1]), int(features.shape[2])
        channels = ops.shape(features)[3]
        levels_y = max(1, int(np.floor(np.log2(height))) + 1)
        levels_x = max(1, int(np.floor(np.log2(width))) + 1)
        cells = ops.reshape(ops.arange(height * width, dtype="int32"), (1, height, width, 1))
        where = ops.broadcast_to(cells, ops.shape(features))
        table, where = self._range_table(ops.stop_gradient(features), where, 1, levels_y)
        table, where = self._range_table(table, where, 3, levels_x)   # (Lx, Ly, B, H, W, C)
        flat = ops.reshape(table, (-1, channels))
        flat_where = ops.reshape(where, (-1, channels))
        batch = ops.shape(features)[0]

        def ranges(masks):
            """(N, bins, size) masks → lo, length (int32, (N, bins)), level j, 2^j."""
            size = masks.shape[-1] or ops.shape(masks)[-1]
            cells = ops.arange(size, dtype="int32")
            inside = ops.cast(masks, "int32")
            length = ops.sum(inside, axis=-1)
            lo = ops.min(ops.where(masks, cells, size), axis=-1)
            level = ops.cast(ops.floor(ops.log2(ops.cast(ops.maximum(length, 1), "float32"))),
                             "int32")
            return ops.minimum(lo, size - 1), length, level, 2 ** level

        y_lo, y_len, y_lvl, y_win = ranges(row_masks)   # (N, ph)
        x_lo, x_len, x_lvl, x_win = ranges(col_masks)   # (N, pw)
        y_starts = ops.stack([y_lo, ops.maximum(y_lo + y_len - y_win, y_lo)], axis=-1)
        x_starts = ops.stack([x_lo, ops.maximum(x_lo + x_len - x_win, x_lo)], axis=-1)
        image = ops.cast(batch_index, "int32")
        b = image[:, None, None, None, None]
        index = ((((x_lvl[:, None, :, None, None] * levels_y + y_lvl[:, :, None, None, None])
                   * batch + b) * height + y_starts[:, :, None, :, None]) * width
                 + x_starts[:, None, :, None, :])                      # (N, ph, pw, 2, 2)
        index = ops.reshape(index, (-1, 4))
        best, cell = None, None
        for k in range(4):  # running max over the 4 corners; the first wins a tie
            value = ops.take(flat, index[:, k], axis=0)               # (N·ph·pw, C)
            at = ops.take(flat_where, index[:, k], axis=0)
            if best is None:
                best, cell = value, at
            else:
                later = value > best
                best, cell = ops.where(later, value, best), ops.where(later, at, cell)
        ph, pw = self.pool_size
        image = ops.reshape(ops.broadcast_to(image[:, None], (ops.shape(image)[0], ph * pw)),
                            (-1, 1))
        source = (image * (height * width) + cell) * channels + ops.arange(channels,
                                                                           dtype="int32")
        best = ops.take(ops.reshape(features, (-1,)), source, axis=0)  # (N·ph·pw, C)
        best = ops.reshape(best, (-1, ph, pw, channels))
        filled = ops.logical_and(y_len[:, :, None] > 0, x_len[:, None, :] > 0)
        return ops.where(filled[..., None], best, ops.zeros_like(best))

    def _pool_masked(self, features, row_masks, col_masks, batch_index):
        """One roi at a time: masked max over its image's (pw, H, W, C) slab."""
        lowest = ops.cast(float("-inf"), features.dtype)

        def pool_one(args):
            rows, cols, b = args  # (ph, H), (pw, W), ()
            fmap = ops.take(features, b, axis=0)  # (H, W, C)
            by_col = ops.max(ops.where(cols[:, None, :, None], fmap[None], lowest), axis=2)
            by_bin = ops.max(ops.where(rows[:, None, :, None], by_col[None], lowest), axis=2)
            filled = ops.logical_and(ops.any(rows, axis=1)[:, None],
                                     ops.any(cols, axis=1)[None, :])
            return ops.where(filled[..., None], by_bin, ops.zeros_like(by_bin))

        return ops.map(pool_one, (row_masks, col_masks, batch_index))

    def call(self, inputs):
        features, rois, batch_index, shape, num_rois = self._prepare(inputs)
        height, width = shape[1], shape[2]
        h_f, w_f = ops.cast(height, "float32"), ops.cast(width, "float32")
        ph, pw = self.pool_size
        row_masks = self._bin_masks(ops.floor(rois[:, 0] * h_f + 0.5),
                                    ops.floor(rois[:, 2] * h_f + 0.5), height, ph)
        col_masks = self._bin_masks(ops.floor(rois[:, 1] * w_f + 0.5),
                                    ops.floor(rois[:, 3] * w_f + 0.5), width, pw)
        if features.shape[1] is not None and features.shape[2] is not None:
            pooled = self._pool_sparse_table(features, row_masks, col_masks, batch_index)
        else:  # unknown map size: the number of table levels is not static
            pooled = self._pool_masked(features, row_masks, col_masks, batch_index)
        return self._finish(pooled, shape, num_rois)


@keras.saving.register_keras_serializable(package="cnn_apps")
class RoIAlign2D(_RoIBase):
    """RoIAlign (He et al. 2017, Mask R-CNN) [ext: not named in the seeds; the quantization-
    free successor of Fast R-CNN RoI pooling, survey S0 §5.2 / SEED_CHECKLIST P-11].

    Continuous coordinates: cell (h, w) of the H×W map covers [h, h+1)×[w, w+1), so its centre
    is at h + ½. The roi spans ``[ymin·H, ymax·H)`` (height ``rh``; with ``aligned=False``
    the legacy Mask R-CNN rule applies: no half-cell shift and ``rh >= 1``). Bin i of ph
    has s×s regular sample points (s = ``sampling_ratio``); the k-th sample row sits at
    ``y = ymin·H + (k + ½)·rh/(ph·s)`` and is read by bilinear interpolation at array index
    ``y − ½`` (Detectron2's ``aligned=True``). Samples with index < −1 or > H read 0;
    indices in [−1, 0] or [H − 1, H] read the edge row. Output = mean of the bin's s² samples.

    Relation to ``tf.image.crop_and_resize`` (which samples row ``a·(H−1) + k·(b−a)·(H−1)/(n−1)``
    for a box [a, b] and crop height n): the same samples are obtained with crop height
    ``n = ph·s`` and ``a·(H−1) = ymin·H + rh/(2n) − ½``, ``b·(H−1) = ymin·H + rh·(1 − 1/(2n))
    − ½``, then s×s average pooling — identical wherever samples stay inside [0, H − 1]
    (crop_and_resize reads 0 outside, instead of clamping within one cell).

    Gradients flow to the feature map and to the roi coordinates (through the bilinear
    weights). Deterministic; no weights.

    Args:
        pool_size: output ``(ph, pw)`` or an int.
        sampling_ratio: s ≥ 1 sample points per bin side.
        aligned: apply the half-cell shift (recommended); False reproduces the original
            Mask R-CNN RoIAlign.

    Example::

        features = keras.Input((16, 16, 64)); rois = keras.Input((32, 4))
        aligned = RoIAlign2D(pool_size=7, sampling_ratio=2)([features, rois])
        model = keras.Model([features, rois], aligned)          # (None, 32, 7, 7, 64)
    """

    def __init__(self, pool_size=(7, 7), sampling_ratio=2, aligned=True, **kwargs):
        super().__init__(pool_size=pool_size, **kwargs)
        if not isinstance(sampling_ratio, int) or sampling_ratio < 1:
            raise ValueError(f"`sampling_ratio` must be an int >= 1; got {sampling_ratio}.")
        self.sampling_ratio = sampling_ratio
        self.aligned = bool(aligned)

    def _sample_axis(self, start, end, size, bins):
        """Bilinear taps along one axis: low/high indices (int32) and their weights."""
        s = self.sampling_ratio
        size_f = ops.cast(size, "float32")
        offset = 0.5 if self.aligned else 0.0
        begin = start * size_f - offset
        extent = (end - start) * size_f
        if not self.aligned:
            extent = ops.maximum(extent, 1.0)
        k = ops.arange(bins * s, dtype="float32")
        pos = begin[..., None] + (k + 0.5) * extent[..., None] / (bins * s)
        valid = ops.logical_and(pos >= -1.0, pos <= size_f)
        pos = ops.maximum(pos, 0.0)
        low = ops.minimum(ops.floor(pos), size_f - 1.0)
        high = ops.minimum(low + 1.0, size_f - 1.0)
        frac = ops.where(low >= size_f - 1.0, 0.0, pos - low)
        valid = ops.cast(valid, "float32")
        return (ops.cast(low, "int32"), ops.cast(high, "int32"),
                (1.0 - frac) * valid, frac * valid)

    def call(self, inputs):
        features, rois, batch_index, shape, num_rois = self._prepare(inputs)
        return self._finish(self._pool_gather(features, rois, batch_index), shape, num_rois)

    def _axis_matrix(self, start, end, size, bins):
        """(..., bins, size) interpolation matrix of one axis: row i is the mean of the
        bilinear taps of bin i's s sample points."""
        s = self.sampling_ratio
        low, high, w_lo, w_hi = self._sample_axis(start, end, size, bins)  # (..., bins·s)
        taps = (ops.one_hot(low, size, dtype="float32") * w_lo[..., None]
                + ops.one_hot(high, size, dtype="float32") * w_hi[..., None])
        taps = ops.reshape(taps, (*ops.shape(taps)[:-2], bins, s, size))
        return ops.mean(taps, axis=-2)

    def pool_dense(self, features, rois):
        """RoIAlign as two batched matmuls: ``features`` (B, H, W, C), ``rois`` (B, R, 4)
        → (B, R, ph, pw, C), equal to ``call``. The s×s mean of products of y and x tap
        weights is the product of the per-axis means, so ``out[r] = Wy[r] · F · Wx[r]ᵀ``
        per channel with (ph, H) and (pw, W) interpolation matrices. Faster than the
        gathers of ``call`` when many rois share a small, deep map (FPN levels); ``call``
        suits large maps with few channels (R-CNN's image warps)."""
        features = ops.cast(features, self.compute_dtype)
        rois = ops.cast(rois, "float32")
        batch, height, width, channels = ops.shape(features)
        count = ops.shape(rois)[1]
        ph, pw = self.pool_size
        wy = self._axis_matrix(rois[..., 0], rois[..., 2], height, ph)  # (B, R, ph, H)
        wx = self._axis_matrix(rois[..., 1], rois[..., 3], width, pw)  # (B, R, pw, W)
        wy, wx = ops.cast(wy, features.dtype), ops.cast(wx, features.dtype)
        rows = ops.matmul(ops.reshape(wy, (batch, count * ph, height)),
                          ops.reshape(features, (batch, height, width * channels)))
        rows = ops.reshape(rows, (batch, count, ph, width, channels))
        return ops.matmul(wx[:, :, None], rows)  # (B, R, 1, pw, W) @ (B, R, ph, W, C)

    def _pool_gather(self, features, rois, batch_index):
        """RoIAlign of a flat list of rois: ``features`` (B, H, W, C), ``rois`` (N, 4)
        normalized yxyx, ``batch_index`` (N,) int32 image of each roi → (N, ph, pw, C), by
        four bilinear-tap gathers per sample point."""
        features = ops.cast(features, self.compute_dtype)
        rois = ops.cast(rois, "float32")
        shape = ops.shape(features)
        height, width = shape[1], shape[2]
        ph, pw = self.pool_size
        s = self.sampling_ratio
        y_lo, y_hi, wy_lo, wy_hi = self._sample_axis(rois[:, 0], rois[:, 2], height, ph)
        x_lo, x_hi, wx_lo, wx_hi = self._sample_axis(rois[:, 1], rois[:, 3], width, pw)
        flat = ops.reshape(features, (-1, shape[3]))  # (B·H·W, C)
        base = ops.cast(batch_index, "int32") * height * width
        out = 0.0
        for y_idx, wy in ((y_lo, wy_lo), (y_hi, wy_hi)):
            for x_idx, wx in ((x_lo, wx_lo), (x_hi, wx_hi)):
                index = (base[:, None, None] + y_idx[:, :, None] * width
                         + x_idx[:, None, :])  # (N, ph·s, pw·s)
                weight = ops.cast(wy[:, :, None] * wx[:, None, :], features.dtype)
                out = out + ops.take(flat, index, axis=0) * weight[..., None]
        out = ops.reshape(out, (-1, ph, s, pw, s, shape[3]))
        return ops.mean(out, axis=(2, 4))

    def get_config(self):
        return {**super().get_config(), "sampling_ratio": self.sampling_ratio,
                "aligned": self.aligned}
