"""External region proposals for the proposal-based detectors (R-CNN, SPP-net, Fast R-CNN):
selective search per image, cached on disk (survey S0 §5.2, SEED_CHECKLIST T-DET-02/03).

Layout: float32 (num_images, R, 4) normalized ``(ymin, xmin, ymax, xmax)`` with
``R = proposals.max_proposals``; an image with fewer boxes is padded with zero rows (a zero
row is "no proposal" everywhere: the samplers and the models ignore it).

Selective search runs outside the TensorFlow graph (numpy / scikit-image, as in the papers),
on the images exactly as the model sees them (the task's ``image_size`` × ``image_size``
arrays), so normalized boxes need no further mapping. A split's proposals are cached as
``<cache_dir>/<split>_<key>.npz`` where ``key`` hashes the images' pixels and the proposal
settings: any change of either builds a new file (stale files are never read); writes are
atomic (temporary file + rename). ``cache_dir`` defaults to ``<data.root>/proposals``.

Example::

    settings = proposal_settings(config)
    train_boxes = split_proposals(data.x_train, settings, cache_dir, "train")  # (N, R, 4)
    boxes = compute_proposals(images, settings)                                 # no cache
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from cnn_apps.errors import ConfigError, DataError

__all__ = ["proposal_settings", "compute_proposals", "split_proposals", "proposal_cache_dir",
           "METHODS"]

METHODS = ("selective_search",)
#: from this many images on, ``compute_proposals`` searches in one process per CPU core
PARALLEL_MIN_IMAGES = 64
_DEFAULTS = {"method": "selective_search", "max_proposals": 800, "scales": [25, 50, 100],
             "colour_spaces": ["hsv", "lab"],
             "similarity_sets": [["colour", "texture", "size", "fill"],
                                 ["texture", "size", "fill"]],
             "sigma": 0.8, "min_size": None, "min_box_size": 2, "seed": 0}


def proposal_settings(config) -> dict:
    """The ``proposals:`` config section with defaults filled in and checked (JSON-able; it is
    stored in ``model_info`` so ``predict``/serving clients compute the same proposals)."""
    given = dict(config.get("proposals") or {})
    unknown = sorted(set(given) - set(_DEFAULTS) - {"cache_dir"})
    if unknown:
        raise ConfigError(f"proposals: unknown key(s) {', '.join(unknown)}; known: "
                          f"{', '.join(sorted(_DEFAULTS))}, cache_dir")
    settings = dict(_DEFAULTS)
    settings.update({k: v for k, v in given.items()
                     if k in _DEFAULTS and (v is not None or k == "min_size")})
    if settings["method"] not in METHODS:
        raise ConfigError(f"proposals.method must be one of {', '.join(METHODS)}, got "
                          f"'{settings['method']}'")
    if int(settings["max_proposals"]) < 1:
        raise ConfigError(f"proposals.max_proposals must be >= 1, got "
                          f"{settings['max_proposals']}")
    settings["max_proposals"] = int(settings["max_proposals"])
    settings["scales"] = [float(k) for k in settings["scales"]]
    settings["colour_spaces"] = [str(s) for s in settings["colour_spaces"]]
    settings["similarity_sets"] = [[str(s) for s in g] for g in settings["similarity_sets"]]
    try:  # the same checks selective_search runs, reported as a config error up front
        from cnn_apps.ops.selective_search import _check_settings

        _check_settings(settings["scales"], settings["colour_spaces"],
                        settings["similarity_sets"], settings["max_proposals"],
                        settings["min_size"] or 1)
    except ValueError as exc:
        raise ConfigError(f"proposals: {exc}") from None
    return settings


def _search_one(image, settings):
    from cnn_apps.ops.selective_search import selective_search

    return selective_search(
        image, scales=settings["scales"], colour_spaces=settings["colour_spaces"],
        similarity_sets=settings["similarity_sets"], sigma=float(settings["sigma"]),
        min_size=settings["min_size"], max_proposals=int(settings["max_proposals"]),
        min_box_size=int(settings["min_box_size"]), seed=int(settings["seed"]))


def _search_chunk(images, settings):
    count = int(settings["max_proposals"])
    out = np.zeros((len(images), count, 4), np.float32)
    for i, image in enumerate(images):
        boxes = _search_one(image, settings)
        out[i, :len(boxes)] = boxes
    return out


def _search_in_workers(images, settings, workers):
    """``_search_chunk`` split over ``workers`` fresh Python processes (``python -m`` this
    module), images and boxes passed as .npy files. Fresh interpreters rather than
    multiprocessing: forking a process that runs TensorFlow threads is unsafe, and spawn
    re-imports the caller's main script (breaking scripts without a ``__main__`` guard)."""
    chunks = [c for c in np.array_split(np.arange(len(images)), workers) if len(c)]
    with tempfile.TemporaryDirectory(prefix="cnn_apps_proposals_") as tmp:
        jobs = []
        for w, index in enumerate(chunks):
            source, target = Path(tmp) / f"images_{w}.npy", Path(tmp) / f"boxes_{w}.npy"
            np.save(source, images[index])
            command = [sys.executable, "-m", __name__, str(source), str(target),
                       json.dumps(settings)]
            jobs.append((subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE), target))
        parts = []
        for process, target in jobs:
            _, err = process.communicate()
            if process.returncode != 0:
                for other, _ in jobs:
                    other.kill()
                raise RuntimeError(f"selective search worker exited with status "
                                   f"{process.returncode}: {err.decode(errors='replace')[-2000:]}")
            parts.append(np.load(target))
    return np.concatenate(parts)


def compute_proposals(images, settings: dict, workers: int | None = None) -> np.ndarray:
    """Selective search on every image of ``images`` (N, H, W, 3) → float32 (N, R, 4),
    zero-padded (module doc).

    ``workers``: processes searching in parallel (None: one per CPU core from
    ``PARALLEL_MIN_IMAGES`` images on, else 1 = in this process). Selective search is pure
    numpy / scikit-image per image, so the result does not depend on the worker count.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"`images` must be (N, H, W, 3); got shape {images.shape}.")
    if workers is None:
        workers = (os.cpu_count() or 1) if len(images) >= PARALLEL_MIN_IMAGES else 1
    workers = max(1, min(int(workers), len(images)))
    if workers == 1:
        return _search_chunk(images, settings)
    return _search_in_workers(images, settings, workers)


def proposal_cache_dir(config) -> Path:
    """``proposals.cache_dir``, else ``<data.root>/proposals``, else the folder of the
    training annotations (COCO), else ``data/proposals``."""
    given = (config.get("proposals") or {}).get("cache_dir")
    if given:
        return Path(given)
    data = config.get("data") or {}
    if data.get("root"):
        return Path(data["root"]) / "proposals"
    if data.get("train_annotations"):
        return Path(data["train_annotations"]).parent / "proposals"
    return Path("data/proposals")


def _cache_key(images, settings) -> str:
    digest = hashlib.sha256()
    digest.update(repr(images.shape).encode())
    digest.update(np.ascontiguousarray(images).tobytes())
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()[:20]


def split_proposals(images, settings: dict, cache_dir, split: str) -> np.ndarray:
    """Proposals for one split's ``images``, read from the cache when a file for exactly these
    pixels and settings exists, else computed and written atomically."""
    from cnn_apps.utils.io import atomic_path

    images = np.asarray(images)
    path = Path(cache_dir) / f"{split}_{_cache_key(images, settings)}.npz"
    if path.is_file():
        try:
            with np.load(path) as stored:
                boxes = stored["proposals"]
            if boxes.shape == (len(images), int(settings["max_proposals"]), 4):
                return boxes.astype(np.float32)
        except (OSError, ValueError, KeyError):
            pass  # unreadable or foreign file: rebuild it below
    boxes = compute_proposals(images, settings)
    try:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, proposals=boxes)
    except OSError as exc:
        raise DataError(f"cannot write the proposal cache '{path}': {exc}") from exc
    return boxes


if __name__ == "__main__":  # a worker of _search_in_workers: images.npy boxes.npy settings
    np.save(sys.argv[2], _search_chunk(np.load(sys.argv[1]), json.loads(sys.argv[3])))
