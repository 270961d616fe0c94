"""Metric-learning task: in-batch pair loss against a numpy loop, P×K batches, recall@1
against sklearn's NearestNeighbors, ROC AUC against a pair-counting formula, a tiny trained
run, the lfw_subset loader and the embeddings serving signature."""

import json

import keras
import numpy as np
import pytest

from cnn_apps.applications.metric_learning import (TASK, InBatchPairLoss, build_embedding_net,
                                                   make_loss, pk_batch_indices, recall_at_k,
                                                   verification_auc)
from cnn_apps.losses import ContrastiveLoss, DoubleMarginContrastiveLoss
from tests.conftest import _yaml

pytestmark = pytest.mark.tf_only


def tiny_metric_config(name="tiny", **overrides):
    from cnn_apps.config import load_config

    values = {"name": name, "backbone": "resnet18", "backbone_args": {"width": 8}, "epochs": 2,
              "embedding_dim": 8, "classes_per_batch": 10, "samples_per_class": 4, "learning_rate": 0.003,
              "data": {"channels": 1}, "augment": {"shift": 0.0, "rotation": 0.0},
              "export": {"formats": []}, **overrides}
    return load_config("metric_learning",
                       overrides=[f"{k}={_yaml(v)}" for k, v in values.items()])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from cnn_apps.training import train

    config = tiny_metric_config(loss="contrastive")
    root = tmp_path_factory.mktemp("ml_runs")
    return train("metric_learning", config, runs_root=root, verbose=0, export=False), config


# -- pieces -------------------------------------------------------------------------------
@pytest.mark.parametrize("pair_loss", [ContrastiveLoss(margin=1.0),
                                       DoubleMarginContrastiveLoss(m1=0.2, m2=1.0)])
def test_in_batch_pair_loss_matches_a_numpy_loop(pair_loss):
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(6, 3)).astype("float32")
    labels = np.array([0, 0, 1, 1, 1, 2])
    ours = float(InBatchPairLoss(pair_loss)(labels, emb))
    match, non = [], []
    for i in range(6):
        for j in range(i + 1, 6):
            d = float(np.sum((emb[i] - emb[j]) ** 2))
            if isinstance(pair_loss, ContrastiveLoss):
                value = 0.5 * d if labels[i] == labels[j] else 0.5 * max(1.0 - d, 0.0)
            else:
                value = max(d - 0.2, 0.0) if labels[i] == labels[j] else max(1.0 - d, 0.0)
            (match if labels[i] == labels[j] else non).append(value)
    expected = 0.5 * np.mean(match) + 0.5 * np.mean(non)
    assert ours == pytest.approx(expected, rel=1e-5)


def test_in_batch_pair_loss_with_one_kind_of_pair_and_serialization():
    emb = np.random.default_rng(1).normal(size=(3, 2)).astype("float32")
    loss = InBatchPairLoss(ContrastiveLoss(margin=0.5))
    all_same = float(loss(np.zeros(3), emb))
    d = [np.sum((emb[i] - emb[j]) ** 2) for i, j in ((0, 1), (0, 2), (1, 2))]
    assert all_same == pytest.approx(np.mean([0.5 * v for v in d]), rel=1e-5)
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(clone.pair_loss, ContrastiveLoss) and clone.pair_loss.margin == 0.5
    with pytest.raises(ValueError, match="pair_loss"):
        InBatchPairLoss("contrastive")
    with pytest.raises(ValueError, match="y_pred"):
        loss(np.zeros(3), np.zeros((3, 2, 2), "float32"))


def test_pk_batches_have_p_classes_of_k_examples():
    labels = np.repeat(np.arange(5), [3, 10, 10, 10, 10])
    rng = np.random.default_rng(0)
    for _ in range(20):
        idx = pk_batch_indices(labels, 4, 4, rng)
        assert len(idx) == 16
        counts = np.bincount(labels[idx], minlength=5)
        assert sorted(counts[counts > 0]) == [4, 4, 4, 4]
        for c in range(1, 5):  # classes with >= K members: K distinct examples
            members = idx[labels[idx] == c]
            assert len(members) in (0, 4) and len(set(members)) == len(members)


def test_recall_at_1_matches_sklearn_nearest_neighbors():
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(2)
    emb = rng.normal(size=(40, 4))
    labels = rng.integers(0, 4, 40)
    nn = NearestNeighbors(n_neighbors=2).fit(emb)
    _, index = nn.kneighbors(emb)  # column 0 is the query itself
    expected = np.mean(labels[index[:, 1]] == labels)
    assert recall_at_k(emb, labels, 1) == pytest.approx(expected)
    _, index5 = NearestNeighbors(n_neighbors=6).fit(emb).kneighbors(emb)
    expected5 = np.mean([(labels[row[1:]] == labels[i]).any() for i, row in enumerate(index5)])
    assert recall_at_k(emb, labels, 5) == pytest.approx(expected5)
    with pytest.raises(ValueError, match="k must be"):
        recall_at_k(emb, labels, 40)


def test_verification_auc_matches_pair_counting():
    """AUC = P(score of a matching pair > score of a non-matching pair) (+½ for ties)."""
    rng = np.random.default_rng(3)
    emb = rng.normal(size=(15, 3))
    labels = rng.integers(0, 3, 15)
    same, score = [], []
    for i in range(15):
        for j in range(i + 1, 15):
            same.append(labels[i] == labels[j])
            score.append(-np.linalg.norm(emb[i] - emb[j]))
    same, score = np.array(same), np.array(score)
    pos, neg = score[same], score[~same]
    expected = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert verification_auc(emb, labels) == pytest.approx(expected)
    with pytest.raises(ValueError, match="matching and non-matching"):
        verification_auc(emb, np.arange(15))


def test_embedding_net_outputs_unit_vectors():
    model = build_embedding_net("lenet5", (32, 32, 1), 5)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 1)).astype("float32")
    emb = keras.ops.convert_to_numpy(model(x)["embeddings"])
    assert emb.shape == (2, 5)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="embedding_dim"):
        build_embedding_net("lenet5", (32, 32, 1), 0)


def test_every_configured_loss_is_built_and_bad_names_are_errors():
    from cnn_apps import losses

    config = tiny_metric_config()
    expected = {"contrastive": ContrastiveLoss, "double_margin": DoubleMarginContrastiveLoss,
                "triplet": losses.TripletLoss, "coupled_clusters": losses.CoupledClustersLoss}
    for name, cls in expected.items():
        loss = make_loss({**config, "loss": name})
        assert isinstance(getattr(loss, "pair_loss", loss), cls)
    with pytest.raises(ValueError, match="loss must be one of"):
        make_loss({**config, "loss": "arcface"})
    with pytest.raises(ValueError, match="classes_per_batch"):
        TASK.train_dataset({**config, "samples_per_class": 1})


def test_lfw_subset_is_faces_then_non_faces():
    from skimage.data import lfw_subset

    from cnn_apps.data.faces import load_lfw_subset

    raw = lfw_subset()
    assert raw.shape == (200, 25, 25)
    data = load_lfw_subset({"image_size": [32, 32], "channels": 1})
    assert data.class_names == ["face", "non_face"]
    assert len(data.y_train) + len(data.y_val) + len(data.y_test) == 200
    assert np.bincount(data.y_test).tolist() == [20, 20]
    assert data.x_train.shape[1:] == (32, 32, 1) and data.x_train.dtype == np.uint8
    # Native size: the loader's pixels are the raw images ×255 (split order aside).
    native = load_lfw_subset({"image_size": [25, 25], "channels": 1})
    pool = np.concatenate([native.x_train, native.x_val, native.x_test])[..., 0]
    expected = np.sort(np.round(raw * 255).reshape(200, -1).sum(1))
    np.testing.assert_array_equal(np.sort(pool.reshape(200, -1).astype(int).sum(1)),
                                  expected.astype(int))


def test_metric_data_names_lfw_and_rejects_unknown_datasets():
    from cnn_apps.applications.metric_learning import load_metric_data

    data = load_metric_data({"dataset": "lfw_subset", "image_size": [32, 32], "channels": 1})
    assert data.num_classes == 2 and len(data.y_test) == 40
    with pytest.raises(ValueError, match="data.dataset"):
        load_metric_data({"dataset": "mnist"})


def test_pk_training_batches_from_the_task():
    config = tiny_metric_config(classes_per_batch=3, samples_per_class=2)
    images, targets = next(iter(TASK.train_dataset(config)))
    labels = targets["embeddings"].numpy()
    assert images.shape == (6, 32, 32, 1)
    assert sorted(np.bincount(labels)[np.bincount(labels) > 0]) == [2, 2, 2]


# -- trained run --------------------------------------------------------------------------
def test_tiny_run_trains_and_evaluates(run):
    import csv

    result, config = run
    rows = list(csv.DictReader(open(result.run_dir / "history.csv")))
    losses = [float(r["loss"]) for r in rows]
    assert len(losses) == 2 and all(np.isfinite(losses)) and losses[1] < losses[0]
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["num_examples"] == 359
    for key in ("recall_at_1", "recall_at_5", "verification_auc"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["recall_at_5"] >= metrics["recall_at_1"]


def test_predict_gives_embeddings_and_nearest_gallery_classes(run):
    result, config = run
    info = json.loads((result.run_dir / "model_info.json").read_text())
    data = TASK.data(config)
    out = TASK.predict(result.model, data.x_test[:2], info, top_k=3)
    assert len(out) == 2 and len(out[0]["embedding"]) == 8
    assert np.linalg.norm(out[0]["embedding"]) == pytest.approx(1.0, abs=1e-4)
    scores = [item["score"] for item in out[0]["top_k"]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True)
    assert out[0]["top_k"][0]["class"] in info["class_names"]


def test_serving_signatures_return_embeddings(run, tmp_path):
    import cv2
    import tensorflow as tf

    from cnn_apps.export import export_run

    result, config = run
    data = TASK.data(config)
    path = export_run(result.run_dir, "saved_model", tmp_path / "sm")
    loaded = tf.saved_model.load(str(path))
    x = data.x_test[:2].astype("float32")
    expected = result.model.predict(x, verbose=0)["embeddings"]
    got = loaded.signatures["predict_tensor"](images=tf.constant(x))["embeddings"].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    encoded = [cv2.imencode(".png", img)[1].tobytes() for img in data.x_test[:2]]
    from_bytes = loaded.signatures["serving_default"](
        image_bytes=tf.constant(encoded))["embeddings"].numpy()
    assert from_bytes.shape == (2, 8)
    np.testing.assert_allclose(from_bytes, expected, atol=1e-4)


# A narrow ResNet-18 on grey digits, 4 epochs of 8x4 batches, no augmentation: ~1 min per
# loss on 2 cores; every loss reached recall@1 >= 0.89 against 0.68 untrained when tuned.
SLOW_SETTINGS = {"backbone": "resnet18", "backbone_args": {"width": 8}, "embedding_dim": 64,
                 "classes_per_batch": 8, "samples_per_class": 4, "epochs": 4}


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["contrastive", "double_margin", "triplet",
                                  "coupled_clusters"])
def test_each_loss_lifts_recall_at_1_well_above_the_untrained_net(loss, tmp_path):
    from cnn_apps.training import train

    config = tiny_metric_config(f"slow_{loss}", loss=loss, **SLOW_SETTINGS)
    keras.utils.set_random_seed(int(config["seed"]))
    untrained = TASK.evaluate(TASK.build_model(config), config)["recall_at_1"]
    result = train("metric_learning", config, runs_root=tmp_path, verbose=0, export=False)
    assert result.metrics["recall_at_1"] >= untrained + 0.15, (untrained, result.metrics)

