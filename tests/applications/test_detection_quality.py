"""Issue 6 quality bars: with the packaged default ``detection`` config (only the model, the
run name, the data folder and export changed), each detector trains on the built-in
``shapes`` data and reaches its COCO AP50 target (pycocotools) on the validation split, read
back from the run's ``metrics.json``. Slow: one full default training run per detector.

Every xdist worker of the run uses one data folder: the first test to need the data (or its
selective-search proposals) creates it under a file lock while the others wait, so the
proposals are computed once however the tests are spread.
"""

import fcntl
import json

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.tf_only]


@pytest.fixture(scope="session")
def shapes_root(tmp_path_factory, worker_id):
    base = tmp_path_factory.getbasetemp()
    # under xdist a worker's base temp is a child of the run's folder, which they share
    return (base.parent if worker_id != "master" else base) / "det_quality_shapes"


def default_config(model_name, shapes_root):
    from cnn_apps.config import load_config

    return load_config("detection", overrides=[f"name=quality_{model_name}",
                                               f"model={model_name}",
                                               f"data.root={shapes_root}",
                                               "export.formats=[]"])


def prepare_data(config, shapes_root):
    """Create the data folder, and the proposals the detector takes, once per run."""
    from cnn_apps.applications.detection import TASK

    with open(f"{shapes_root}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        config = TASK.resolve_config(config)
        TASK.data(config)  # generates the shapes folder when it is missing
        for split in ("train", "val"):
            TASK.proposals(config, split)  # None for detectors without proposals


def default_run(model_name, shapes_root, runs_root):
    from cnn_apps.training import train

    config = default_config(model_name, shapes_root)
    prepare_data(config, shapes_root)
    result = train("detection", config, runs_root=runs_root, verbose=0, export=False)
    return json.loads((result.run_dir / "metrics.json").read_text())


#: the issue's AP50 targets
AP50_TARGETS = {"ssd": 0.90, "yolo": 0.90, "yolo_v3": 0.90, "faster_rcnn": 0.90,
                "fast_rcnn": 0.80, "sppnet": 0.80, "rcnn": 0.70}
#: seconds each run took inside the full suite (2 cores, beside the other xdist worker); the
#: first proposal-based run also pays for selective search on the fresh data folder
SUITE_SECONDS = {"ssd": 700, "yolo": 900, "yolo_v3": 600, "faster_rcnn": 900,
                 "fast_rcnn": 670, "sppnet": 550, "rcnn": 500}


@pytest.mark.parametrize("model_name", [
    pytest.param(name, marks=pytest.mark.cost(SUITE_SECONDS[name])) for name in AP50_TARGETS])
def test_default_config_reaches_ap50(model_name, shapes_root, tmp_path):
    metrics = default_run(model_name, shapes_root, tmp_path)
    assert metrics["split"] == "val" and metrics["model"] == model_name
    assert metrics["AP50"] >= AP50_TARGETS[model_name], metrics
