"""Issue 6 quality bar for the one-stage detectors: with the packaged default ``detection``
config (only the run name, the data folder and export changed), each detector trains on the
built-in ``shapes`` data and reaches COCO AP50 >= 0.90 (pycocotools) on its validation split,
read back from the run's ``metrics.json``. Slow: one full default training run per detector.
"""

import json

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.tf_only]


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    return tmp_path_factory.mktemp("det_quality") / "shapes"


def default_run(model_name, shapes_root, runs_root):
    from cnn_apps.config import load_config
    from cnn_apps.training import train

    config = load_config("detection", overrides=[f"name=quality_{model_name}",
                                                 f"model={model_name}",
                                                 f"data.root={shapes_root}",
                                                 "export.formats=[]"])
    result = train("detection", config, runs_root=runs_root, verbose=0, export=False)
    return json.loads((result.run_dir / "metrics.json").read_text())


@pytest.mark.parametrize("model_name", ["ssd"])
def test_default_config_reaches_ap50(model_name, shapes_root, tmp_path):
    metrics = default_run(model_name, shapes_root, tmp_path)
    assert metrics["split"] == "val" and metrics["model"] == model_name
    assert metrics["AP50"] >= 0.90, metrics
