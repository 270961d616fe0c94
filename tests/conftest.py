"""Test-session settings shared by the whole suite."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# Keep test runs small and repeatable on the 2-core CI machine.
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "2")

import pytest  # noqa: E402


def tiny_classification_config(name="tiny", **overrides):
    """A fast classification config: a narrow ResNet-18 (width 16) + softmax head on digits."""
    from cnn_apps.config import load_config

    values = {"name": name, "backbone": "resnet18", "backbone_args": {"width": 16},
              "epochs": 2, "batch_size": 64, "learning_rate": 0.003,
              "export": {"formats": []}, **overrides}
    return load_config("classification", overrides=[f"{k}={_yaml(v)}" for k, v in values.items()])


def _yaml(value):
    import yaml

    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """One trained tiny classification run, shared by the classification, export and CLI
    tests: ``(RunResult, config)``."""
    from cnn_apps.training import train

    config = tiny_classification_config()
    root = tmp_path_factory.mktemp("runs")
    result = train("classification", config, runs_root=root, verbose=0, export=False)
    return result, config
