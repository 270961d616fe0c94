"""Data-parallel training gives the weights of a single-device run on the same global batches.

Each configuration runs in its own process (``distributed_worker.py``): logical CPU devices
and ``TF_CONFIG`` must be set before TensorFlow initializes. The reference is Keras'
``model.fit`` under ``OneDeviceStrategy`` (an independent path for the multi-worker loop).
Every run takes one global batch per epoch (the whole training split), so all runs see the
same global batches whatever their shuffle order.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

WORKER = Path(__file__).with_name("distributed_worker.py")
TIMEOUT_S = 300


def _env(tf_config=None):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", "TPU_NAME")}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow",
               CUDA_VISIBLE_DEVICES="-1")
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return env


def _run_all(commands, expected_status=0):
    """Start every ``(argv, env)`` at once; wait (time-bound); kill leftovers in ``finally``."""
    processes = []
    try:
        for argv, env in commands:
            processes.append(subprocess.Popen([sys.executable, str(WORKER), *argv], env=env,
                                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                              text=True))
        outputs = [process.communicate(timeout=TIMEOUT_S)[0] for process in processes]
        for process, output in zip(processes, outputs):
            assert process.returncode == expected_status, output[-4000:]
        return outputs
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _weights(path):
    data = np.load(path)
    return [data[f"arr_{i}"] for i in range(len(data.files))]


def _assert_same_weights(actual, expected, tol=1e-5):
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=tol)


def test_mirrored_over_two_logical_cpus_matches_one_device(tmp_path):
    # 160 training images, one global batch of 160 = 80 per replica.
    outputs = _run_all([(
        [str(tmp_path), str(tmp_path / "runs"), "one_device,mirrored", "2",
         "data.test_fraction=0.86", "batch_size=160"], _env())])
    assert "2 replica(s): global batch 160 = 80 per replica" in outputs[0]
    one_device = _weights(tmp_path / "one_device.npz")
    mirrored = _weights(tmp_path / "mirrored.npz")
    initial_moved = max(float(np.abs(w).max()) for w in one_device)
    assert initial_moved > 0
    _assert_same_weights(mirrored, one_device)


def test_two_worker_processes_match_a_single_process_run(tmp_path):
    """Two workers, preempted at the start of epoch 2 and restarted: both restore from the
    chief's backup and end with the weights of an uninterrupted single-process run."""
    # 179 training images in one global batch of 180: replicas hold 89 and 90 examples, so
    # the loss must be averaged over the all-reduced global count, not assumed halves.
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    runs = tmp_path / "runs"

    def workers(**env):
        return [([str(tmp_path), str(runs), "multi_worker"],
                 {**_env({"cluster": cluster, "task": {"type": "worker", "index": i}}), **env})
                for i in range(2)]

    reference_command = ([str(tmp_path), str(runs), "one_device"], _env())
    first = _run_all(workers(INTERRUPT_AT_EPOCH="2"), expected_status=3)
    assert "MultiWorkerMirroredStrategy (2 workers), 2 replica(s): global batch 180 = 90 " \
           "per replica" in first[0]
    run_dir = runs / "classification" / "run_multi_worker"
    assert json.loads((run_dir / "backup" / "training_metadata.json").read_text())["epoch"] == 2
    _run_all(workers() + [reference_command])
    reference = _weights(tmp_path / "one_device.npz")
    for index in range(2):
        _assert_same_weights(_weights(tmp_path / f"multi_worker_worker{index}.npz"), reference)
    # Chief-only writing: one history with one row per epoch, the chief's checkpoint/metrics.
    history = (run_dir / "history.csv").read_text().strip().splitlines()
    assert [row.split(",")[0] for row in history] == ["epoch", "0", "1", "2"]
    assert history[0].split(",")[:5] == ["epoch", "learning_rate", "loss", "top1", "top5"]
    assert (run_dir / "best.keras").exists() and (run_dir / "metrics.json").exists()
    assert not (run_dir / "backup").exists()  # removed by the chief when training finished
    reference_history = (runs / "classification" / "run_one_device" / "history.csv")
    reference_rows = reference_history.read_text().strip().splitlines()
    # Same logged training loss per epoch as model.fit (global mean over the batch).
    for ours, theirs in zip(history[1:], reference_rows[1:]):
        np.testing.assert_allclose(float(ours.split(",")[2]), float(theirs.split(",")[2]),
                                   rtol=1e-4)
