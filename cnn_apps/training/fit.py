"""The one training loop wrapper every task uses.

``train(task, config)`` builds the model inside the selected ``tf.distribute`` strategy,
compiles it, fits with the standard callbacks (best checkpoint, ``BackupAndRestore``, CSV and
TensorBoard logs, early stopping, NaN guard, learning-rate schedule), optionally in two phases
for fine-tuning (backbone frozen, then unfrozen at a lower learning rate), evaluates the best
checkpoint on the test split and writes the run folder::

    runs/<task>/<name>/
      config.yaml  model_info.json  best.keras  history.csv  logs/  backup/
      metrics.json  learning_curves.png  (+ task plots, exports)
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from cnn_apps.config import save_config
from cnn_apps.errors import ConfigError
from cnn_apps.utils.io import atomic_write_json

_PHASE1_DONE = "phase1_done.weights.h5"


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict
    model: object


def run_dir_for(task_name: str, config: dict, runs_root: str | Path = "runs") -> Path:
    return Path(runs_root) / task_name / str(config.get("name", "default"))


def set_reproducible(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy, TF and Keras; optionally make TF ops deterministic (CPU runs then
    repeat bit for bit)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(int(seed))
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def set_precision(mode) -> None:
    import keras

    policies = {None: "float32", "float32": "float32", "bfloat16": "mixed_bfloat16",
                "float16": "mixed_float16"}
    if mode not in policies:
        raise ConfigError(f"mixed_precision must be null, bfloat16 or float16, got '{mode}'")
    keras.config.set_dtype_policy(policies[mode])


def make_optimizer(config: dict):
    import keras

    name = config.get("optimizer", "adam")
    lr = float(config["learning_rate"])
    wd = float(config.get("weight_decay") or 0.0) or None
    if name == "adam":
        return keras.optimizers.AdamW(lr, weight_decay=wd) if wd else keras.optimizers.Adam(lr)
    if name == "sgd":  # classical momentum, gamma = 0.9 (survey S0 §3.7)
        return keras.optimizers.SGD(lr, momentum=0.9, nesterov=True, weight_decay=wd)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(lr, weight_decay=wd)
    raise ConfigError(f"optimizer must be adam, sgd or rmsprop, got '{name}'")


def _callbacks(model_path, run_dir, config, epochs, base_lr, monitor, backup_name):
    import keras

    from cnn_apps.training.callbacks import SCHEDULES, AtomicBestCheckpoint, EpochLearningRate

    schedule = config.get("lr_schedule", "cosine")
    if schedule not in SCHEDULES:
        raise ConfigError(f"lr_schedule must be one of {', '.join(SCHEDULES)}, got '{schedule}'")
    metric, mode = monitor
    best_file = run_dir / "best_score.json"
    initial_best = json.loads(best_file.read_text())["best"] if best_file.exists() else None

    class _RecordBest(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            atomic_write_json(best_file, {"monitor": metric, "best": checkpoint.best})

    checkpoint = AtomicBestCheckpoint(model_path, monitor=metric, mode=mode,
                                      initial_best=initial_best)
    return [
        keras.callbacks.BackupAndRestore(str(run_dir / backup_name)),
        EpochLearningRate(base_lr, schedule, epochs),
        checkpoint,
        _RecordBest(),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
        keras.callbacks.TensorBoard(str(run_dir / "logs"), write_graph=False),
        keras.callbacks.EarlyStopping(metric, mode=mode,
                                      patience=int(config.get("early_stopping_patience") or 10**6)),
        keras.callbacks.TerminateOnNaN(),
    ]


def train(task, config: dict, runs_root: str | Path = "runs", verbose: int | None = None,
          export: bool = True, extra_callbacks=()) -> RunResult:
    """Train ``task`` (a ``Task`` or its name) with the resolved ``config``; see module doc.

    ``extra_callbacks`` are added to every ``fit`` phase (e.g. a user's own logger).
    """
    import keras

    from cnn_apps.applications import get_task
    from cnn_apps.training.plots import plot_history
    from cnn_apps.training.strategy import get_strategy

    task = get_task(task) if isinstance(task, str) else task
    run_dir = run_dir_for(task.name, config, runs_root)
    resuming = any((run_dir / name).exists() for name in ("backup", "backup_frozen", _PHASE1_DONE))
    if (run_dir / "metrics.json").exists() and not resuming:
        clean_run_dir(run_dir)  # a finished run of the same name: start it again from scratch
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2

    set_reproducible(config.get("seed", 0), config.get("deterministic", True))
    set_precision(config.get("mixed_precision"))
    strategy = get_strategy(config.get("strategy", "auto"))
    epochs = int(config["epochs"])
    freeze_epochs = int(config.get("freeze_backbone_epochs") or 0)
    if freeze_epochs >= epochs and freeze_epochs:
        raise ConfigError(f"freeze_backbone_epochs ({freeze_epochs}) must be smaller than "
                          f"epochs ({epochs})")

    train_ds = task.train_dataset(config)
    val_ds = task.eval_dataset(config, "val")
    atomic_write_json(run_dir / "model_info.json", task.model_info(config))
    model_path = run_dir / "best.keras"
    base_lr = float(config["learning_rate"])

    with strategy.scope():
        model = task.build_model(config)
        backbone = _backbone(model, task) if freeze_epochs else None

        def compile_model(lr):
            task.compile_model(model, config, lr)

        if freeze_epochs:
            phase1_weights = run_dir / _PHASE1_DONE
            if phase1_weights.exists():  # resumed after phase 1 finished
                model.load_weights(str(phase1_weights))
            else:
                backbone.trainable = False
                compile_model(base_lr)
                model.fit(train_ds, validation_data=val_ds, epochs=freeze_epochs, shuffle=False,
                          verbose=verbose,
                          callbacks=_callbacks(model_path, run_dir, config, epochs, base_lr,
                                               task.monitor, "backup_frozen")
                          + list(extra_callbacks))
                model.save_weights(str(phase1_weights))
            backbone.trainable = True
            base_lr *= float(config.get("finetune_lr_factor", 0.1))
        compile_model(base_lr)
        model.fit(train_ds, validation_data=val_ds, epochs=epochs, initial_epoch=freeze_epochs,
                  shuffle=False,
                  verbose=verbose,
                  callbacks=_callbacks(model_path, run_dir, config, epochs, base_lr,
                                       task.monitor, "backup") + list(extra_callbacks))

    if model_path.exists():
        model = keras.saving.load_model(model_path, safe_mode=True)
    metrics = task.evaluate(model, config, split="test", run_dir=run_dir)
    metrics["epochs_run"] = _epochs_in_history(run_dir / "history.csv")
    atomic_write_json(run_dir / "metrics.json", metrics)
    if (run_dir / "history.csv").exists():
        plot_history(run_dir / "history.csv", run_dir / "learning_curves.png")
    (run_dir / _PHASE1_DONE).unlink(missing_ok=True)
    if export:
        from cnn_apps.export import export_run

        for fmt in (config.get("export") or {}).get("formats") or []:
            export_run(run_dir, fmt, run_dir / "export" / fmt, model=model)
    return RunResult(run_dir, metrics, model)


def _backbone(model, task):
    name = task.backbone_layer_name()
    try:
        return model.get_layer(name)
    except ValueError:
        raise ConfigError(f"freeze_backbone_epochs: task '{task.name}' has no backbone layer "
                          f"'{name}' to freeze") from None


def _epochs_in_history(path: Path) -> int:
    if not path.exists():
        return 0
    with open(path) as handle:
        return max(0, sum(1 for _ in handle) - 1)


def clean_run_dir(run_dir: str | Path) -> None:
    """Remove a run folder (used by tests and ``--fresh``)."""
    if os.path.isdir(run_dir):
        shutil.rmtree(run_dir)
