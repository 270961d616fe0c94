"""Issue 6 quality bars: with the packaged default ``detection`` config (only the model, the
run name, the data folder and export changed), each detector trains on the built-in
``shapes`` data and reaches its COCO AP50 target (pycocotools) on the validation split, read
back from the run's ``metrics.json``. Slow: one full default training run per detector; the
data folder (and so the selective-search proposal cache) is shared by the module.
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


#: the issue's AP50 targets, for the detectors whose default run the 2-core suite can afford
#: in its 60 minutes (the default runs of fast_rcnn, yolo and sppnet reach theirs too: 0.86,
#: 0.90, 0.80, bench/RESULTS.md, but at 900-1,400 s each inside the suite they do not fit)
AP50_TARGETS = {"ssd": 0.90, "yolo_v3": 0.90, "faster_rcnn": 0.90, "rcnn": 0.70}
#: seconds each run took inside the full suite (2 cores, beside the other xdist worker);
#: rcnn includes selective search on the fresh data folder
SUITE_SECONDS = {"ssd": 860, "yolo_v3": 900, "faster_rcnn": 1300, "rcnn": 900}


@pytest.mark.parametrize("model_name", [
    pytest.param(name, marks=pytest.mark.cost(SUITE_SECONDS[name])) for name in AP50_TARGETS])
def test_default_config_reaches_ap50(model_name, shapes_root, tmp_path):
    metrics = default_run(model_name, shapes_root, tmp_path)
    assert metrics["split"] == "val" and metrics["model"] == model_name
    assert metrics["AP50"] >= AP50_TARGETS[model_name], metrics
