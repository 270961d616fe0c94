"""``strategy=parameter_server``: a real cluster on 127.0.0.1 (1 chief + 2 workers + 1 ps, one
process each; workers and ps run ``cnn-apps serve-cluster``) trains the tiny classifier, and
the cluster-free checks of the per-worker pipeline, the server command and ``train()``.

Parameter-server training is asynchronous, so the cluster run is not compared with a
single-device run; the test asserts what must hold: the variables live on the ps task, the
training loss falls, the run folder is complete, a chief killed at an epoch boundary resumes
from its backup, and the reloaded best checkpoint gives the metrics the chief wrote.
"""

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from cnn_apps.errors import ConfigError
from tests.conftest import tiny_classification_config
from tests.training.test_distributed import _env, _free_ports

CHIEF = Path(__file__).with_name("ps_chief.py")
REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 400  # hang guard only
NO_AUGMENT = {"shift": 0.0, "rotation": 0.0, "zoom": 0.0, "brightness": 0.0, "contrast": 0.0}


def _wait_listening(port, processes, timeout_s=TIMEOUT_S):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                pytest.fail(f"a server exited early (status {process.returncode}):\n"
                            f"{process.stdout.read()[-3000:]}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    pytest.fail(f"hang guard: no server listened on port {port} after {timeout_s} s")


def _run_chief(runs, out_json, tf_config, **env):
    chief = subprocess.Popen([sys.executable, str(CHIEF), str(runs), str(out_json)],
                             env={**_env(tf_config), **env}, cwd=REPO, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        output = chief.communicate(timeout=TIMEOUT_S)[0]
    except subprocess.TimeoutExpired:
        chief.kill()
        pytest.fail(f"hang guard: the chief did not finish in {TIMEOUT_S} s:\n"
                    f"{chief.communicate()[0][-4000:]}")
    return chief.returncode, output


def test_cluster_trains_resumes_and_writes_the_run_folder(tmp_path):
    chief_port, *worker_ports, ps_port = _free_ports(4)
    cluster = {"chief": [f"127.0.0.1:{chief_port}"],
               "worker": [f"127.0.0.1:{port}" for port in worker_ports],
               "ps": [f"127.0.0.1:{ps_port}"]}

    def tf_config(job, index):
        return {"cluster": cluster, "task": {"type": job, "index": index}}

    servers = []
    try:
        for job, index in (("worker", 0), ("worker", 1), ("ps", 0)):
            servers.append(subprocess.Popen(
                [sys.executable, "-m", "cnn_apps.cli", "serve-cluster"], cwd=REPO, text=True,
                env=_env(tf_config(job, index)), stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT))
        for port in (*worker_ports, ps_port):
            _wait_listening(port, servers)
        runs, out_json = tmp_path / "runs", tmp_path / "chief.json"
        # A coordinator preempted when epoch 1 begins, then started again with the same
        # command: it resumes from the backup written at the end of epoch 0.
        status, output = _run_chief(runs, out_json, tf_config("chief", 0),
                                    INTERRUPT_AT_EPOCH="1")
        assert status == 3, output[-4000:]
        assert "parameter_server: 2 worker(s), 1 ps;" in output, output[-4000:]
        run_dir = runs / "classification" / "ps"
        assert json.loads((run_dir / "backup" / "training_metadata.json").read_text())[
            "epoch"] == 1  # the next epoch to run
        status, output = _run_chief(runs, out_json, tf_config("chief", 0))
        assert status == 0, output[-4000:]
    finally:
        for process in servers:
            process.kill()
            process.wait()
    result = json.loads(out_json.read_text())

    # Model weights, BatchNorm statistics and optimizer slots all live on the ps task.
    devices = result["devices"]
    assert any("moving_mean" in path for path in devices)
    names = {path.rsplit("/", 1)[-1] for path in devices}
    assert {"iteration", "learning_rate"} <= names  # the optimizer's step and rate
    assert any(path.endswith("_velocity") for path in devices)  # Adam(W) slots
    assert all("/job:ps/replica:0/task:0/" in device for device in devices.values()), devices

    # One history row per epoch across the restart; the training loss falls.
    history = (run_dir / "history.csv").read_text().strip().splitlines()
    header = history[0].split(",")
    assert header[:5] == ["epoch", "learning_rate", "loss", "top1", "top5"]
    rows = [dict(zip(header, row.split(","))) for row in history[1:]]
    assert [row["epoch"] for row in rows] == ["0", "1"]
    losses = [float(row["loss"]) for row in rows]
    assert np.all(np.isfinite(losses)) and losses[1] < losses[0], losses
    assert not (run_dir / "backup").exists()  # removed when training finished

    # The reloaded best checkpoint predicts, and gives the test metrics the chief wrote.
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics == result["metrics"] and metrics["epochs_run"] == 2
    from cnn_apps.applications import get_task

    config = tiny_classification_config("ps", augment=NO_AUGMENT)
    data = get_task("classification").data(config)
    model = keras.saving.load_model(run_dir / "best.keras", safe_mode=True)
    probs = np.asarray(model.predict(data.x_test.astype("float32"), verbose=0)["probabilities"])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    top1 = float(np.mean(probs.argmax(axis=1) == data.y_test))
    np.testing.assert_allclose(metrics["top1"], top1, atol=1e-6)
    assert top1 > 1.5 / len(data.class_names)  # learned something beyond chance


# -- without a cluster ------------------------------------------------------------------------
def test_worker_pipeline_refuses_variables_and_traces_without_them():
    import tensorflow as tf

    from cnn_apps.applications import get_task
    from cnn_apps.training.parameter_server import per_worker_dataset_fn

    task, strategy = get_task("classification"), tf.distribute.get_strategy()
    augmenting = tiny_classification_config("aug")  # default config: random augmentation on
    with pytest.raises(ConfigError, match="creates variables.*augment.shift=0.*multi_worker"):
        per_worker_dataset_fn(lambda: task.train_dataset(augmenting), strategy, 2)
    plain = tiny_classification_config("plain", augment=NO_AUGMENT)
    function = per_worker_dataset_fn(lambda: task.train_dataset(plain), strategy, 2)
    assert isinstance(function, tf.types.experimental.ConcreteFunction)
    # The workers' batches have the structure of the task's own training batches.
    assert function.structured_outputs.element_spec == task.train_dataset(plain).element_spec


def test_steps_per_epoch_is_one_pass_and_needs_a_batch_per_worker():
    import tensorflow as tf

    from cnn_apps.training.parameter_server import default_steps_per_epoch

    dataset = tf.data.Dataset.range(10).batch(4)  # 3 batches (4, 4, 2)
    assert default_steps_per_epoch(dataset, 2) == 3
    with pytest.raises(ConfigError, match="3 batch.*fewer than the 4 workers.*batch_size"):
        default_steps_per_epoch(dataset, 4)
    with pytest.raises(ConfigError, match="no known length"):
        default_steps_per_epoch(dataset.repeat().filter(lambda b: True), 1)


@pytest.mark.parametrize("tf_config, message", [
    (None, "no cluster"),
    ({"cluster": {"chief": ["127.0.0.1:1"], "worker": ["127.0.0.1:2"], "ps": ["127.0.0.1:3"]},
      "task": {"type": "chief", "index": 0}}, "the 'chief' task runs the training program"),
    ({"cluster": {"chief": ["127.0.0.1:1"], "worker": ["127.0.0.1:2"], "ps": ["127.0.0.1:3"]},
      "task": {"type": "worker", "index": 4}}, "task worker:4 is not in the cluster"),
])
def test_serve_cluster_rejects_a_task_it_cannot_serve(monkeypatch, capsys, tf_config, message):
    from cnn_apps.cli import main

    monkeypatch.delenv("TF_CONFIG", raising=False)
    if tf_config is not None:
        monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
    assert main(["serve-cluster"]) == 2
    assert message in capsys.readouterr().err


def test_train_on_a_non_chief_task_or_with_xla_fails_fast(monkeypatch, tmp_path):
    from cnn_apps.training import train

    cluster = {"chief": ["127.0.0.1:1"], "worker": ["127.0.0.1:2"], "ps": ["127.0.0.1:3"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster,
                                                "task": {"type": "worker", "index": 0}}))
    config = tiny_classification_config("ps", strategy="parameter_server")
    with pytest.raises(ConfigError, match="task type is 'worker'.*cnn-apps serve-cluster"):
        train("classification", config, runs_root=tmp_path, verbose=0, export=False)
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster,
                                                "task": {"type": "chief", "index": 0}}))
    config = tiny_classification_config("ps", strategy="parameter_server", jit_compile=True)
    with pytest.raises(ConfigError, match="does not support jit_compile=true"):
        train("classification", config, runs_root=tmp_path, verbose=0, export=False)
    assert not any(tmp_path.iterdir())
