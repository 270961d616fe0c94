"""One export path for every task: SavedModel (TF Serving layout), ONNX, TFLite.

``export_saved_model`` writes ``base_dir/<version>/`` (next integer version) through a
temporary folder that is renamed at the end, so a failed export leaves nothing behind and an
existing version is never overwritten.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from cnn_apps.errors import CnnAppsError
from cnn_apps.utils.io import atomic_path

FORMATS = ("saved_model", "onnx", "tflite")


def next_version(base_dir: str | Path) -> int:
    base_dir = Path(base_dir)
    versions = [int(p.name) for p in base_dir.iterdir()
                if p.is_dir() and re.fullmatch(r"\d+", p.name)] if base_dir.is_dir() else []
    return max(versions, default=0) + 1


def export_saved_model(model, base_dir, endpoints: dict, version: int | None = None,
                       extra_files: dict | None = None) -> Path:
    """Write a SavedModel with ``endpoints`` ({signature name: tf.function}) to
    ``base_dir/<version>/`` atomically; returns that folder."""
    import keras

    base_dir = Path(base_dir)
    base_dir.mkdir(parents=True, exist_ok=True)
    version = next_version(base_dir) if version is None else int(version)
    target = base_dir / str(version)
    if target.exists():
        raise CnnAppsError(f"export version '{target}' already exists; serving versions are "
                           "never overwritten (omit the version to get the next one)")
    tmp = Path(tempfile.mkdtemp(dir=base_dir, prefix=f".tmp-{version}-"))
    try:
        archive = keras.export.ExportArchive()
        archive.track(model)
        for name, fn in endpoints.items():
            archive.add_endpoint(name, fn)
        out = tmp / "model"
        archive.write_out(str(out), verbose=False)
        for name, text in (extra_files or {}).items():
            (out / "assets.extra").mkdir(exist_ok=True)
            (out / "assets.extra" / name).write_text(text)
        os.rename(out, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def export_onnx(model, path) -> Path:
    """ONNX through tf2onnx (``model.export(format="onnx")``), written atomically."""
    import numpy as np

    path = Path(path)
    # The ONNX exporter traces the model's call; a freshly loaded model has not been called.
    model(np.zeros((1, *model.inputs[0].shape[1:]), dtype="float32"), training=False)
    with atomic_path(path) as tmp:
        model.export(str(tmp), format="onnx", verbose=False)
    return path


def export_tflite(model, path) -> Path:
    """TFLite flatbuffer converted from the model's SavedModel, written atomically."""
    import tensorflow as tf

    path = Path(path)
    with tempfile.TemporaryDirectory() as tmp:
        model.export(os.path.join(tmp, "sm"), format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(os.path.join(tmp, "sm"))
        flatbuffer = converter.convert()
    with atomic_path(path) as tmp_path:
        tmp_path.write_bytes(flatbuffer)
    return path


def load_run_model(source):
    """``(model, info)`` from a run folder (``best.keras`` + ``model_info.json``) or a
    ``.keras`` file (``model_info.json`` next to it, if present)."""
    import keras

    source = Path(source)
    model_path = source / "best.keras" if source.is_dir() else source
    if not model_path.is_file():
        raise CnnAppsError(f"no model at '{model_path}' (expected a run folder with best.keras "
                           "or a .keras file)")
    info_path = model_path.parent / "model_info.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    model = keras.saving.load_model(model_path, safe_mode=True)
    if "input_shape" not in info:
        info["input_shape"] = list(model.inputs[0].shape[1:])
    info.setdefault("task", "classification")
    return model, info


def export_run(source, fmt: str, out_dir, model=None) -> Path:
    """Export a trained run (folder or ``.keras``) as ``fmt`` into ``out_dir``."""
    from cnn_apps.applications import get_task

    if fmt not in FORMATS:
        raise CnnAppsError(f"export format must be one of {', '.join(FORMATS)}, got '{fmt}'")
    loaded, info = load_run_model(source)
    model = model or loaded
    task = get_task(info["task"])
    out_dir = Path(out_dir)
    if fmt == "saved_model":
        return export_saved_model(model, out_dir, task.serving_endpoints(model, info),
                                  extra_files={"model_info.json": json.dumps(info, indent=2)})
    if fmt == "onnx":
        return export_onnx(model, out_dir / "model.onnx")
    return export_tflite(model, out_dir / "model.tflite")
