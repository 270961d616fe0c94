"""scikit-image's ``lfw_subset``: 100 real face crops (LFW) and 100 non-face patches.

``skimage.data.lfw_subset()`` ships 200 grey 25×25 images in [0, 1] with no network access:
the first 100 are faces, the last 100 are non-faces. They are mapped to uint8 0..255,
resized to ``data.image_size`` and split like the digits (fixed, stratified per class).
"""

from __future__ import annotations

import numpy as np

from cnn_apps.data.images import ImageSplits, _resize, _splits

CLASS_NAMES = ["face", "non_face"]


def load_lfw_subset(data_cfg: dict) -> ImageSplits:
    """The 200 ``lfw_subset`` images as classes ``face`` (0) and ``non_face`` (1).

    Args (keys of ``data_cfg``): ``image_size`` (default [32, 32]), ``channels`` (1 or 3),
    ``val_fraction`` (0.1), ``test_fraction`` (0.2).
    """
    from skimage.data import lfw_subset

    raw = np.asarray(lfw_subset())
    images = np.clip(np.round(raw * 255.0), 0, 255).astype(np.uint8)
    labels = np.repeat(np.array([0, 1], dtype=np.int32), len(images) // 2)
    size = tuple(data_cfg.get("image_size", (32, 32)))
    images = _resize(images, size, int(data_cfg.get("channels", 1)))
    return _splits(images, labels, list(CLASS_NAMES), data_cfg,
                   {"source": "skimage.data.lfw_subset"})
