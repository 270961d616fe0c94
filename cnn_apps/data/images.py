"""In-memory image classification datasets: scikit-learn's digits and image folders.

Images are decoded and resized once, when loaded, and kept as ``uint8`` arrays; the tf.data
pipeline (``cnn_apps.data.pipeline``) then batches, augments and prefetches them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnn_apps.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


@dataclass
class ImageSplits:
    """Train/val/test arrays of one classification dataset."""

    class_names: list
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    info: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def _resize(images: np.ndarray, size, channels: int) -> np.ndarray:
    import cv2

    height, width = size
    out = np.empty((len(images), height, width, channels), dtype=np.uint8)
    for i, image in enumerate(images):
        if image.shape[:2] != (height, width):
            interp = cv2.INTER_AREA if image.shape[0] > height else cv2.INTER_LINEAR
            image = cv2.resize(image, (width, height), interpolation=interp)
        out[i] = to_channels(image, channels)
    return out


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """HxW, HxWx1, HxWx3 or HxWx4 -> HxWx``channels`` (gray repeated; alpha dropped)."""
    import cv2

    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] == 4:
        image = image[..., :3]
    if channels == 1 and image.shape[-1] == 3:
        image = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)[..., None]
    elif channels == 3 and image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    return image


def split_indices(labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int = 0):
    """Fixed stratified train/val/test split (the same for every run with this seed).

    Per class: ``round(fraction * n)`` examples (at least one when the fraction is non-zero)
    go to test and to validation; the class needs at least one training example left.
    """
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise DataError(f"data.{name} must be in [0, 1), got {value}")
    rng = np.random.default_rng(seed)
    train, val, test = [], [], []
    for label in np.unique(labels):
        index = rng.permutation(np.flatnonzero(labels == label))
        n_test = max(1, round(test_fraction * len(index))) if test_fraction else 0
        n_val = max(1, round(val_fraction * len(index))) if val_fraction else 0
        if len(index) <= n_test + n_val:
            raise DataError(f"class {label} has {len(index)} examples: too few for a split with "
                            f"val_fraction={val_fraction}, test_fraction={test_fraction}")
        test.extend(index[:n_test])
        val.extend(index[n_test:n_test + n_val])
        train.extend(index[n_test + n_val:])
    return np.sort(train), np.sort(val), np.sort(test)


def _splits(images, labels, class_names, data_cfg, info) -> ImageSplits:
    train, val, test = split_indices(labels, data_cfg.get("val_fraction", 0.1),
                                     data_cfg.get("test_fraction", 0.2))
    return ImageSplits(class_names, images[train], labels[train], images[val], labels[val],
                       images[test], labels[test], info)


def load_digits(data_cfg: dict) -> ImageSplits:
    """scikit-learn's 1,797 real 8×8 handwritten digits (UCI), upsampled to ``image_size``.

    Fixed stratified split: 20% test, 10% validation by default (``data.test_fraction``,
    ``data.val_fraction``). Pixel values 0..16 are mapped to 0..255.
    """
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    images = (bunch.images * (255.0 / 16.0)).round().astype(np.uint8)
    labels = bunch.target.astype(np.int32)
    size = tuple(data_cfg.get("image_size", (32, 32)))
    images = _resize(images, size, int(data_cfg.get("channels", 1)))
    names = [str(i) for i in range(10)]
    return _splits(images, labels, names, data_cfg, {"source": "sklearn.datasets.load_digits"})


def list_image_folder(root: str | Path):
    """``root/<class>/*.png|jpg`` -> (sorted class names, [(path, label)]).

    Raises DataError for a missing root, a root without class folders, or an empty class folder.
    """
    root = Path(root) if root else None
    if root is None or not root.is_dir():
        raise DataError(f"image folder '{root}' does not exist (data.path: expected "
                        "root/<class_name>/<image>.png|jpg)")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(f"image folder '{root}' has no class sub-folders "
                        "(expected root/<class_name>/<image>.png|jpg)")
    items = []
    for label, class_dir in enumerate(class_dirs):
        files = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"class folder '{class_dir}' has no images "
                            f"(expected files ending in {', '.join(IMAGE_SUFFIXES)})")
        items.extend((path, label) for path in files)
    return [p.name for p in class_dirs], items


def read_image(path: str | Path, channels: int = 3) -> np.ndarray:
    """Decode an image file to RGB (or gray) uint8; DataError naming the file if corrupt."""
    import cv2

    path = Path(path)
    data = np.fromfile(path, dtype=np.uint8) if path.is_file() else None
    if data is None:
        raise DataError(f"image file '{path}' does not exist")
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise DataError(f"image file '{path}' is corrupt or not an image "
                        f"(expected {', '.join(IMAGE_SUFFIXES)})")
    if image.dtype != np.uint8:  # 16-bit PNGs
        image = (image / (np.iinfo(image.dtype).max / 255.0)).astype(np.uint8)
    if image.ndim == 3 and image.shape[-1] >= 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB if image.shape[-1] == 4
                             else cv2.COLOR_BGR2RGB)
    return to_channels(image, channels)


def load_image_folder(data_cfg: dict) -> ImageSplits:
    """Image-folder dataset ``data.path`` = ``root/<class>/*.png|jpg``, resized to
    ``data.image_size``, split like digits (fixed, stratified)."""
    names, items = list_image_folder(data_cfg.get("path"))
    limit = data_cfg.get("max_images_per_class")
    if limit:
        kept, counts = [], {}
        for path, label in items:
            if counts.get(label, 0) < int(limit):
                kept.append((path, label))
                counts[label] = counts.get(label, 0) + 1
        items = kept
    channels = int(data_cfg.get("channels", 3))
    size = tuple(data_cfg.get("image_size", (32, 32)))
    images = _resize([read_image(path, channels) for path, _ in items], size, channels)
    labels = np.array([label for _, label in items], dtype=np.int32)
    return _splits(images, labels, names, data_cfg, {"source": str(data_cfg.get("path"))})


DATASETS = {
    "digits": (load_digits, "scikit-learn's 1,797 real 8x8 handwritten digits, 10 classes"),
    "image_folder": (load_image_folder, "your images: data.path=root/<class>/*.png|jpg"),
}


def load_classification_data(data_cfg: dict) -> ImageSplits:
    name = data_cfg.get("dataset")
    if name not in DATASETS:
        raise DataError(f"unknown classification dataset '{name}' (data.dataset); "
                        f"valid: {', '.join(DATASETS)}")
    return DATASETS[name][0](data_cfg)
