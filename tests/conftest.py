"""Test-session settings shared by the whole suite."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# Keep test runs small and repeatable on the 2-core CI machine.
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "2")

import pytest  # noqa: E402


@pytest.hookimpl(trylast=True)  # after -m / -k deselection
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist, start the long tests (marked ``cost(seconds)``) first, spread over
    the workers by expected time (longest first onto the least-loaded worker).

    ``--dist worksteal`` hands worker k the k-th contiguous share of the collection and later
    steals from the tail of a queue, so a long test placed at the head of a share runs at
    once on that worker, while the short ones behind it balance the finish. Without this, a
    module of long tests lands in one share and runs serially."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    heavy = sorted((item for item in items if item.get_closest_marker("cost")),
                   key=lambda item: -float(item.get_closest_marker("cost").args[0]))
    if workers < 2 or not heavy:
        return
    light = [item for item in items if not item.get_closest_marker("cost")]
    shares, loads = [[] for _ in range(workers)], [0.0] * workers
    for item in heavy:
        k = loads.index(min(loads))
        shares[k].append(item)
        loads[k] += float(item.get_closest_marker("cost").args[0])
    order, remaining = [], len(items)
    for k, share in enumerate(shares):  # worksteal's first split: remaining // workers left
        size = remaining // (workers - k)
        fill = max(size - len(share), 0) if k < workers - 1 else len(light)
        order += share + light[:fill]
        light = light[fill:]
        remaining -= len(share) + fill
    items[:] = order


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
