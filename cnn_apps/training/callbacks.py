"""Callbacks the training core adds to every run."""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np

from cnn_apps.utils.io import atomic_path


class AtomicBestCheckpoint(keras.callbacks.Callback):
    """Saves the model to ``path`` (``.keras``) whenever ``monitor`` improves.

    Unlike ``ModelCheckpoint`` it writes to a temporary file and renames it, so a run killed
    mid-save never leaves a truncated checkpoint. ``best`` survives a resume through
    ``initial_best``.
    """

    def __init__(self, path, monitor="val_loss", mode="min", initial_best=None):
        super().__init__()
        self.path, self.monitor, self.mode = Path(path), monitor, mode
        self.best = initial_best if initial_best is not None else (
            math.inf if mode == "min" else -math.inf)

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not np.isfinite(value):
            return
        better = value < self.best if self.mode == "min" else value > self.best
        if better:
            self.best = float(value)
            with atomic_path(self.path) as tmp:
                self.model.save(tmp)


def cosine_schedule(epoch: int, epochs: int) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * min(epoch, epochs) / max(1, epochs)))


def step_schedule(epoch: int, epochs: int) -> float:
    return 0.01 if epoch >= 0.75 * epochs else 0.1 if epoch >= 0.5 * epochs else 1.0


SCHEDULES = {
    "constant": lambda epoch, epochs: 1.0,
    "cosine": cosine_schedule,
    "step": step_schedule,
}


class EpochLearningRate(keras.callbacks.Callback):
    """Sets the optimizer's learning rate at each epoch start: ``base_lr * factor(epoch)``.

    Epoch-indexed (not step-indexed) so a resumed or two-phase run continues the same curve.
    """

    def __init__(self, base_lr: float, schedule: str, epochs: int):
        super().__init__()
        self.base_lr, self.schedule, self.epochs = base_lr, SCHEDULES[schedule], epochs

    def on_epoch_begin(self, epoch, logs=None):
        self.model.optimizer.learning_rate.assign(self.base_lr * self.schedule(epoch, self.epochs))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(
                self.model.optimizer.learning_rate))


class SharedBackupAndRestore(keras.callbacks.BackupAndRestore):
    """``BackupAndRestore`` whose restore folder can differ from its backup folder.

    Multi-worker training: every worker restores from the same backup (the chief's,
    ``restore_dir``) so all resume from identical weights, optimizer state and epoch, while a
    non-chief worker writes its own backups to a scratch folder (``backup_dir``) that no one
    reads (the chief-only-writes rule of the TF multi-worker guide). With
    ``restore_dir=None`` it is the plain Keras callback.

    Example::

        SharedBackupAndRestore("/tmp/worker1/backup", restore_dir="runs/x/backup")
    """

    def __init__(self, backup_dir, restore_dir=None, **kwargs):
        super().__init__(str(backup_dir), **kwargs)
        self.restore_dir = str(restore_dir or backup_dir)

    def on_train_begin(self, logs=None):
        names = ("_weights_path", "_training_metadata_path", "_prev_weights_path",
                 "_prev_training_metadata_path")
        own = {name: getattr(self, name) for name in names}
        for name, path in own.items():
            setattr(self, name, str(Path(self.restore_dir) / Path(path).name))
        try:
            super().on_train_begin(logs)
        finally:
            for name, path in own.items():
                setattr(self, name, path)
