"""One export path for every task: SavedModel (TF Serving layout), ONNX, TFLite (float/int8).

``export_saved_model`` writes ``base_dir/<version>/`` (next integer version) through a
temporary folder that is renamed at the end, so a failed export leaves nothing behind and an
existing version is never overwritten. It also writes the TF Serving warm-up requests
(``assets.extra/tf_serving_warmup_requests``, see ``cnn_apps.export.warmup``). Every export
refuses models with ``Lambda`` layers (``cnn_apps.export.validation``): they cannot be loaded
with ``safe_mode=True``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from cnn_apps.errors import CnnAppsError
from cnn_apps.export.validation import check_exportable, guard_endpoint
from cnn_apps.utils.io import atomic_path

FORMATS = ("saved_model", "onnx", "tflite")


def next_version(base_dir: str | Path) -> int:
    base_dir = Path(base_dir)
    versions = [int(p.name) for p in base_dir.iterdir()
                if p.is_dir() and re.fullmatch(r"\d+", p.name)] if base_dir.is_dir() else []
    return max(versions, default=0) + 1


def export_saved_model(model, base_dir, endpoints: dict, version: int | None = None,
                       extra_files: dict | None = None, warmup_inputs: dict | None = None,
                       model_name: str | None = None) -> Path:
    """Write a SavedModel with ``endpoints`` ({signature name: tf.function}) to
    ``base_dir/<version>/`` atomically; returns that folder. Every endpoint is wrapped with
    run-time input checks (``validation.guard_endpoint``: shape, rank, NaN). ``warmup_inputs``
    ({signature input name: numpy batch}, e.g. ``Task.warmup_inputs(info)``) writes one
    TF Serving warm-up request per signature; ``model_name`` (default: the base folder's name)
    goes into their ``model_spec``."""
    import keras

    from cnn_apps.export.warmup import write_warmup_file

    check_exportable(model)
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
            archive.add_endpoint(name, guard_endpoint(fn))
        out = tmp / "model"
        archive.write_out(str(out), verbose=False)
        for name, text in (extra_files or {}).items():
            (out / "assets.extra").mkdir(exist_ok=True)
            (out / "assets.extra" / name).write_text(text)
        if warmup_inputs is not None:
            write_warmup_file(out, warmup_inputs, model_name or base_dir.resolve().name)
        # os.rename onto an existing folder would fail (or replace an empty one): re-check.
        if target.exists():
            raise CnnAppsError(f"export version '{target}' appeared during the export; "
                               "serving versions are never overwritten")
        os.rename(out, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def export_onnx(model, path) -> Path:
    """ONNX through tf2onnx (``model.export(format="onnx")``), written atomically."""
    import numpy as np

    check_exportable(model)
    path = Path(path)
    # The ONNX exporter traces the model's call; a freshly loaded model has not been called.
    model(np.zeros((1, *model.inputs[0].shape[1:]), dtype="float32"), training=False)
    with atomic_path(path) as tmp:
        model.export(str(tmp), format="onnx", verbose=False)
    return path


def export_tflite(model, path, quantize: str | None = None, representative_data=None,
                  num_calibration: int = 200) -> Path:
    """TFLite flatbuffer converted from the model's SavedModel (float-pixel input), written
    atomically.

    ``quantize="int8"``: full integer post-training quantization: every op runs in int8
    (``TFLITE_BUILTINS_INT8``; conversion fails rather than silently keeping float ops), with
    activation ranges calibrated on ``representative_data`` (an array of model inputs, e.g.
    the task's validation images; the first ``num_calibration`` are used). The model's input
    and output stay float32 (quantize/dequantize at the edges), so callers feed the same raw
    0..255 pixels as for the float model.

    Example::

        export_tflite(model, "m.tflite")
        export_tflite(model, "m_int8.tflite", quantize="int8", representative_data=x_val)
    """
    import numpy as np
    import tensorflow as tf

    check_exportable(model)
    if quantize not in (None, "int8"):
        raise CnnAppsError(f"quantize must be None or 'int8', got {quantize!r}")
    if quantize and representative_data is None:
        raise CnnAppsError("int8 quantization needs representative_data (model inputs from "
                           "the task's data) to calibrate activation ranges")
    path = Path(path)
    with tempfile.TemporaryDirectory() as tmp:
        model.export(os.path.join(tmp, "sm"), format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(os.path.join(tmp, "sm"))
        if quantize == "int8":
            samples = np.asarray(representative_data, dtype=np.float32)[:int(num_calibration)]
            if len(samples) == 0:
                raise CnnAppsError("representative_data is empty")

            def representative_dataset():
                for sample in samples:
                    yield [sample[None]]

            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = representative_dataset
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
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
    info.setdefault("task", "classification")
    # Importing the task module registers its custom layers and models with Keras; a fresh
    # process (cnn-apps predict/export) cannot deserialize best.keras without it.
    from cnn_apps.applications import get_task

    get_task(info["task"]).prepare_loading(info)
    import cnn_apps.layers  # noqa: F401  (registers every cnn_apps layer)
    import cnn_apps.losses  # noqa: F401

    try:
        model = keras.saving.load_model(model_path, safe_mode=True)
    except ValueError as exc:
        if "safe_mode" not in str(exc):
            raise
        raise CnnAppsError(f"'{model_path}' holds code (e.g. a Lambda layer) that only loads "
                           "with safe_mode=False; it is refused for safety") from exc
    if "input_shape" not in info:
        info["input_shape"] = list(model.inputs[0].shape[1:])
    return model, info


def representative_inputs(source, count: int = 200):
    """Up to ``count`` model inputs from the validation split of the run at ``source`` (its
    ``config.yaml`` names the data), for int8 calibration."""
    import numpy as np
    import yaml

    from cnn_apps.applications import get_task

    source = Path(source)
    run_dir = source if source.is_dir() else source.parent
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise CnnAppsError(f"int8 export needs the run's data for calibration, but "
                           f"'{run_dir}' has no config.yaml (pass the run folder)")
    config = yaml.safe_load(config_path.read_text())
    info_path = run_dir / "model_info.json"
    task_name = (json.loads(info_path.read_text())["task"] if info_path.is_file()
                 else "classification")
    batches, total = [], 0
    for inputs, _ in get_task(task_name).eval_dataset(config, "val"):
        batches.append(np.asarray(inputs))
        total += len(batches[-1])
        if total >= count:
            break
    return np.concatenate(batches)[:count]


def export_run(source, fmt: str, out_dir, model=None, int8: bool = False) -> Path:
    """Export a trained run (folder or ``.keras``) as ``fmt`` into ``out_dir``; ``int8``
    (TFLite only) quantizes with calibration data from the run's validation split."""
    from cnn_apps.applications import get_task

    if fmt not in FORMATS:
        raise CnnAppsError(f"export format must be one of {', '.join(FORMATS)}, got '{fmt}'")
    if int8 and fmt != "tflite":
        raise CnnAppsError(f"int8 quantization is for the tflite format, not '{fmt}'")
    loaded, info = load_run_model(source)
    model = model or loaded
    task = get_task(info["task"])
    out_dir = Path(out_dir)
    if fmt == "saved_model":
        return export_saved_model(model, out_dir, task.serving_endpoints(model, info),
                                  extra_files={"model_info.json": json.dumps(info, indent=2)},
                                  warmup_inputs=task.warmup_inputs(info))
    if fmt == "onnx":
        return export_onnx(model, out_dir / "model.onnx")
    if int8:
        return export_tflite(model, out_dir / "model_int8.tflite", quantize="int8",
                             representative_data=representative_inputs(source))
    return export_tflite(model, out_dir / "model.tflite")
