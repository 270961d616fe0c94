"""Training core: ``train(task, config)``, strategies, callbacks and run folders."""

from cnn_apps.training.fit import RunResult, run_dir_for, train

__all__ = ["RunResult", "run_dir_for", "train"]
