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
import tempfile
import time
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
    else:  # the switch is process-wide: an earlier deterministic run in this process set it
        from tensorflow.python.framework.config import disable_op_determinism

        disable_op_determinism()


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


def _callbacks(model_path, run_dir, config, epochs, base_lr, monitor, backup_name,
               out_dir=None):
    """The standard callbacks. ``out_dir`` is where this process writes (the run folder, or a
    non-chief worker's scratch folder); state is read back from ``run_dir``."""
    import keras

    from cnn_apps.training.callbacks import (SCHEDULES, AtomicBestCheckpoint, EpochLearningRate,
                                             SharedBackupAndRestore)

    out_dir = run_dir if out_dir is None else out_dir
    schedule = config.get("lr_schedule", "cosine")
    if schedule not in SCHEDULES:
        raise ConfigError(f"lr_schedule must be one of {', '.join(SCHEDULES)}, got '{schedule}'")
    metric, mode = monitor
    best_file = run_dir / "best_score.json"
    initial_best = json.loads(best_file.read_text())["best"] if best_file.exists() else None

    class _RecordBest(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            atomic_write_json(out_dir / "best_score.json",
                              {"monitor": metric, "best": checkpoint.best})

    checkpoint = AtomicBestCheckpoint(out_dir / model_path.name, monitor=metric, mode=mode,
                                      initial_best=initial_best)
    return [
        SharedBackupAndRestore(out_dir / backup_name, restore_dir=run_dir / backup_name),
        EpochLearningRate(base_lr, schedule, epochs),
        checkpoint,
        _RecordBest(),
        keras.callbacks.CSVLogger(str(out_dir / "history.csv"), append=True),
        keras.callbacks.TensorBoard(str(out_dir / "logs"), write_graph=False),
        keras.callbacks.EarlyStopping(metric, mode=mode,
                                      patience=int(config.get("early_stopping_patience") or 10**6)),
        keras.callbacks.TerminateOnNaN(),
    ]


def train(task, config: dict, runs_root: str | Path = "runs", verbose: int | None = None,
          export: bool = True, extra_callbacks=()) -> RunResult:
    """Train ``task`` (a ``Task`` or its name) with the resolved ``config``; see module doc.

    ``extra_callbacks`` are added to every ``fit`` phase (e.g. a user's own logger).
    ``batch_size`` is the global batch (split over the replicas); under ``multi_worker`` the
    custom loop of ``cnn_apps.training.distributed`` replaces ``model.fit`` and only the chief
    writes the run folder (other workers write to a scratch folder, removed at the end).
    Under ``parameter_server`` this process is the chief (coordinator) and the asynchronous
    loop of ``cnn_apps.training.parameter_server`` schedules the steps on the workers.
    """
    started = time.perf_counter()
    import keras

    from cnn_apps.applications import get_task
    from cnn_apps.training.plots import plot_history
    from cnn_apps.training.strategy import (batch_plan, check_parameter_server_cluster,
                                           get_strategy, is_chief, is_multi_worker)

    task = get_task(task) if isinstance(task, str) else task
    config = task.resolve_config(config)
    parameter_server = config.get("strategy") == "parameter_server"
    if parameter_server:  # fail fast, before anything is built or written
        check_parameter_server_cluster(config.get("cluster_resolver") or "tf_config",
                                       coordinator=True)
        if config.get("jit_compile"):
            raise ConfigError("strategy 'parameter_server' does not support jit_compile=true "
                              "(the variables live on the ps tasks, outside the worker's XLA "
                              "cluster); set jit_compile=false")
    if config.get("jit_compile") and config.get("deterministic", True):
        # Keras would only warn and train without XLA: with TF op determinism on, some
        # gradients (MaxPool's) have no XLA kernel, so Keras turns jit_compile off.
        raise ConfigError("jit_compile=true needs deterministic=false: TF op determinism has "
                          "no XLA kernels for some gradients (MaxPool's), and Keras would "
                          "silently train without XLA")
    # First: MultiWorkerMirroredStrategy must exist before any other TensorFlow op.
    strategy = get_strategy(config.get("strategy", "auto"), tpu=config.get("tpu"),
                            cluster_resolver=config.get("cluster_resolver"))
    multi_worker, chief = is_multi_worker(strategy), is_chief(strategy)
    run_dir = run_dir_for(task.name, config, runs_root)
    resuming = any((run_dir / name).exists() for name in ("backup", "backup_frozen", _PHASE1_DONE))
    if chief and (run_dir / "metrics.json").exists() and not resuming:
        clean_run_dir(run_dir)  # a finished run of the same name: start it again from scratch
    out_dir = run_dir if chief else Path(tempfile.mkdtemp(prefix="cnn_apps_worker_"))
    out_dir.mkdir(parents=True, exist_ok=True)
    if chief:
        save_config(config, run_dir / "config.yaml")
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2

    set_reproducible(config.get("seed", 0), config.get("deterministic", True))
    set_precision(config.get("mixed_precision"))
    epochs = int(config["epochs"])
    freeze_epochs = int(config.get("freeze_backbone_epochs") or 0)
    if freeze_epochs >= epochs and freeze_epochs:
        raise ConfigError(f"freeze_backbone_epochs ({freeze_epochs}) must be smaller than "
                          f"epochs ({epochs})")
    plan = batch_plan(config.get("batch_size"), strategy.num_replicas_in_sync,
                      config["learning_rate"], config.get("lr_scaling"),
                      config.get("lr_base_batch"))
    if chief:
        print(f"[cnn_apps] {plan.describe(strategy)}", flush=True)

    train_ds = None if multi_worker or parameter_server else task.train_dataset(config)
    val_ds = task.eval_dataset(config, "val")
    if chief:
        atomic_write_json(run_dir / "model_info.json", task.model_info(config))
    model_path = run_dir / "best.keras"
    base_lr = plan.learning_rate

    with strategy.scope():
        model = task.build_model(config)
    backbone = _backbone(model, task) if freeze_epochs else None

    def compile_model(lr):
        with strategy.scope():
            task.compile_model(model, config, lr)
            if multi_worker or parameter_server:  # optimizer variables: in the scope
                model.optimizer.build(model.trainable_variables)

    def fit(first_epoch, last_epoch, base_lr, backup_name):
        callbacks = _callbacks(model_path, run_dir, config, epochs, base_lr, task.monitor,
                               backup_name, out_dir) + list(extra_callbacks)
        if parameter_server:
            from cnn_apps.training.parameter_server import fit_task

            fit_task(task, config, model, strategy, val_ds, epochs=last_epoch,
                     initial_epoch=first_epoch, callbacks=callbacks, verbose=verbose)
            return
        if multi_worker:
            from cnn_apps.training.distributed import DistributedTrainer

            # Outside the scope: the loop's metrics are plain (per-worker) variables.
            trainer = DistributedTrainer(model, strategy, task.loss(config),
                                         task.metrics(config),
                                         jit_compile=bool(config.get("jit_compile", False)))
            trainer.fit(lambda: task.train_dataset(config), val_ds, epochs=last_epoch,
                        initial_epoch=first_epoch, callbacks=callbacks, verbose=verbose)
            return
        with strategy.scope():
            model.fit(train_ds, validation_data=val_ds, epochs=last_epoch,
                      initial_epoch=first_epoch, shuffle=False, verbose=verbose,
                      callbacks=callbacks)

    if freeze_epochs:
        if (run_dir / _PHASE1_DONE).exists():  # resumed after phase 1 finished
            with strategy.scope():
                model.load_weights(str(run_dir / _PHASE1_DONE))
        else:
            backbone.trainable = False
            compile_model(base_lr)
            fit(0, freeze_epochs, base_lr, "backup_frozen")
            model.save_weights(str(out_dir / _PHASE1_DONE))
        backbone.trainable = True
        base_lr *= float(config.get("finetune_lr_factor", 0.1))
    compile_model(base_lr)
    fit(freeze_epochs, epochs, base_lr, "backup")

    if (out_dir / model_path.name).exists():
        model = keras.saving.load_model(out_dir / model_path.name, safe_mode=True)
    if not chief:  # the chief evaluates, logs and exports; the scratch folder goes away
        shutil.rmtree(out_dir, ignore_errors=True)
        return RunResult(run_dir, {}, model)
    model = task.finalize_model(model, config, run_dir)
    metrics = task.evaluate(model, config, split="test", run_dir=run_dir)
    metrics["epochs_run"] = _epochs_in_history(run_dir / "history.csv")
    # wall time of this process (data, training, post-training stage, evaluation); a resumed
    # run counts from its restart
    metrics["run_seconds"] = round(time.perf_counter() - started, 1)
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
