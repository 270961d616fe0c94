"""Crash safety: a training run killed with SIGKILL mid-epoch and started again with the same
command resumes from its backup and ends with exactly the configured number of epochs."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.tf_only

EPOCHS = 3
ROOT = Path(__file__).resolve().parent.parent


def _command(runs):
    return [sys.executable, "-m", "cnn_apps.cli", "train", "classification", "name=killed",
            "backbone=resnet18", "backbone_args={width: 8}", f"epochs={EPOCHS}",
            "batch_size=32", "data.max_images_per_class=60", "early_stopping_patience=100",
            "--runs", str(runs), "--no-export"]


def _env():
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3",
               TF_NUM_INTEROP_THREADS="2", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def _epochs(history):
    with open(history, newline="") as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


def test_sigkill_mid_epoch_then_same_command_resumes(tmp_path):
    run_dir = tmp_path / "classification" / "killed"
    backup = run_dir / "backup" / "training_metadata.json"
    log = open(tmp_path / "first.log", "w")
    process = subprocess.Popen(_command(tmp_path), cwd=ROOT, env=_env(), stdout=log,
                               stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 600
        # The first epoch's backup (and its history row) exist: epoch 2 is now under way.
        while not (backup.exists() and (run_dir / "history.csv").exists()
                   and _epochs(run_dir / "history.csv")):
            assert process.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            if time.monotonic() > deadline:  # hang guard, not a speed check
                pytest.fail("the first run wrote no backup within 600 s")
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=60) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
    completed_before_kill = _epochs(run_dir / "history.csv")
    assert completed_before_kill and max(completed_before_kill) < EPOCHS - 1
    assert not (run_dir / "metrics.json").exists()           # it really died mid-run

    rerun = subprocess.run(_command(tmp_path), cwd=ROOT, env=_env(), capture_output=True,
                           text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    # Resumed, not restarted: every epoch appears exactly once (a restart from scratch would
    # append epoch 0 again), and the run ends at the configured count.
    assert _epochs(run_dir / "history.csv") == list(range(EPOCHS))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs_run"] == EPOCHS
    assert 0.0 <= metrics["top1"] <= 1.0
    assert (run_dir / "best.keras").is_file()
    assert not (run_dir / "backup").exists()                 # cleared at a clean finish
    assert json.loads(rerun.stdout[rerun.stdout.index("{"):])["run_dir"] == str(run_dir)
