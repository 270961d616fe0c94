"""Classification task end to end on the real digits data (a tiny, narrow ResNet-18 run)."""

import csv
import json

import keras
import numpy as np
import pytest

from cnn_apps.applications.classification import (TASK, CoarseWeightedAverage,
                                                  build_classifier, topk_accuracy)
from cnn_apps.data.images import load_digits
from tests.conftest import tiny_classification_config


def test_run_folder_holds_everything(trained_run):
    result, config = trained_run
    run = result.run_dir
    for name in ("config.yaml", "model_info.json", "best.keras", "history.csv", "metrics.json",
                 "learning_curves.png", "confusion_matrix.png"):
        assert (run / name).is_file(), name
    assert (run / "logs").is_dir()                      # TensorBoard
    assert not (run / "backup").exists()                # BackupAndRestore cleans up at the end
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["num_examples"] == 359
    assert metrics["epochs_run"] == 2
    rows = list(csv.DictReader(open(run / "history.csv")))
    assert len(rows) == 2 and {"loss", "val_loss", "top1", "learning_rate"} <= set(rows[0])
    # The tiny run already learns: far above chance (0.1).
    assert metrics["top1"] > 0.5


def test_metrics_match_sklearn_on_the_saved_model(trained_run):
    from sklearn.metrics import accuracy_score, top_k_accuracy_score

    result, config = trained_run
    data = TASK.data(config)
    model = keras.saving.load_model(result.run_dir / "best.keras")
    probs = model.predict(data.x_test.astype("float32"), verbose=0)["probabilities"]
    ours = topk_accuracy(probs, data.y_test, 5)
    assert ours["top1"] == pytest.approx(accuracy_score(data.y_test, probs.argmax(1)))
    assert ours["top5"] == pytest.approx(top_k_accuracy_score(data.y_test, probs, k=5,
                                                              labels=range(10)))
    assert json.loads((result.run_dir / "metrics.json").read_text())["top1"] == pytest.approx(
        ours["top1"])


def test_digits_split_is_fixed_and_stratified():
    a = load_digits({"image_size": [32, 32], "channels": 1})
    b = load_digits({"image_size": [32, 32], "channels": 1})
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert (len(a.y_train), len(a.y_val), len(a.y_test)) == (1259, 179, 359)
    assert a.x_train.shape[1:] == (32, 32, 1) and a.x_train.dtype == np.uint8
    assert np.bincount(a.y_test).min() >= 35            # every digit is in the test split


def test_predict_returns_sorted_topk(trained_run):
    result, config = trained_run
    data = TASK.data(config)
    info = json.loads((result.run_dir / "model_info.json").read_text())
    out = TASK.predict(result.model, data.x_test[:3], info, top_k=3)
    assert len(out) == 3
    scores = [item["score"] for item in out[0]["top_k"]]
    assert scores == sorted(scores, reverse=True) and len(scores) == 3
    assert out[0]["top_k"][0]["class"] in info["class_names"]


def test_coarse_weighted_average_matches_numpy():
    rng = np.random.default_rng(0)
    coarse = rng.dirichlet(np.ones(3), size=4).astype("float32")
    fine = rng.dirichlet(np.ones(5), size=(4, 3)).astype("float32")
    out = keras.ops.convert_to_numpy(CoarseWeightedAverage()([coarse, fine]))
    expected = np.array([[sum(coarse[n, k] * fine[n, k, j] for k in range(3)) for j in range(5)]
                         for n in range(4)])
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    np.testing.assert_allclose(out.sum(1), 1.0, rtol=1e-5)


def test_hierarchical_head_trains_and_reports(tmp_path):
    from cnn_apps.training import train

    config = tiny_classification_config("hd", head="hierarchical", epochs=1,
                                        coarse_groups=[[0, 6, 8, 9], [1, 4, 7], [2, 3, 5]])
    result = train("classification", config, runs_root=tmp_path, verbose=0, export=False)
    assert set(result.model.output_names) >= {"probabilities", "coarse"} or \
        set(result.model.output) >= {"probabilities", "coarse"}
    assert 0.0 <= result.metrics["top1"] <= 1.0
    history = list(csv.DictReader(open(result.run_dir / "history.csv")))
    assert "coarse_loss" in history[0]


def test_bad_coarse_groups_are_rejected():
    from cnn_apps.errors import ConfigError

    with pytest.raises(ConfigError, match="partition"):
        build_classifier("lenet5", 4, (32, 32, 1), head="hierarchical",
                         coarse_groups=[[0, 1], [1, 2]])


def test_fine_tuning_loads_backbone_then_freezes(trained_run, tmp_path):
    """weights=<previous run's best.keras>: backbone weights equal the file's before training;
    during the frozen phase they do not move; afterwards they do."""
    from cnn_apps.training import train

    result, _ = trained_run
    source = keras.saving.load_model(result.run_dir / "best.keras").get_layer("backbone")
    expected = [w.copy() for w in source.get_weights()]
    config = tiny_classification_config("ft", weights=str(result.run_dir / "best.keras"),
                                        epochs=2, freeze_backbone_epochs=1)
    model = TASK.build_model(config)
    for a, b in zip(model.get_layer("backbone").get_weights(), expected):
        np.testing.assert_array_equal(a, b)

    seen = {}

    class Watch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen[epoch] = [w.copy() for w in self.model.get_layer("backbone").get_weights()]

    train("classification", config, runs_root=tmp_path, verbose=0, export=False,
          extra_callbacks=[Watch()])
    for a, b in zip(seen[0], expected):
        np.testing.assert_array_equal(a, b)             # frozen phase
    assert any(not np.array_equal(a, b) for a, b in zip(seen[1], expected))  # unfrozen


def test_mismatched_weights_file_is_a_clear_error(trained_run):
    from cnn_apps.errors import WeightsError

    result, _ = trained_run
    config = tiny_classification_config("bad", backbone="lenet5", backbone_args={},
                                        weights=str(result.run_dir / "best.keras"))
    with pytest.raises(WeightsError, match="best.keras"):
        TASK.build_model(config)


def test_runs_are_reproducible_on_cpu(tmp_path):
    from cnn_apps.training import train

    config = tiny_classification_config("repro", epochs=1)
    a = train("classification", config, runs_root=tmp_path / "a", verbose=0, export=False)
    b = train("classification", config, runs_root=tmp_path / "b", verbose=0, export=False)
    for wa, wb in zip(a.model.get_weights(), b.model.get_weights()):
        np.testing.assert_array_equal(wa, wb)


@pytest.mark.slow
@pytest.mark.cost(345)
def test_default_config_reaches_97_percent_on_digits(tmp_path):
    """Quality bar of the foundation issue: `cnn-apps train classification` defaults."""
    from cnn_apps.config import load_config
    from cnn_apps.training import train

    config = load_config("classification")
    result = train("classification", config, runs_root=tmp_path, verbose=2)
    assert result.metrics["top1"] >= 0.97
    assert (result.run_dir / "export" / "saved_model" / "1" / "saved_model.pb").is_file()
