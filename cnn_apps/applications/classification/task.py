"""The classification ``Task``: data, model, loss, top-1/top-5 evaluation, predict, serving."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from cnn_apps.applications.base import Task
from cnn_apps.applications.classification.model import build_classifier, cluster_classes
from cnn_apps.data.images import load_classification_data
from cnn_apps.data.pipeline import build_augmenter, make_dataset


class ClassificationTask(Task):
    name = "classification"
    description = "image classification: backbone + softmax or HD-CNN head; top-1/top-5"
    monitor = ("val_loss", "min")

    def __init__(self):
        self._cache = {}

    # -- data -------------------------------------------------------------------------------
    def data(self, config):
        """Loaded splits (cached per data config)."""
        key = repr(sorted(config["data"].items()))
        if key not in self._cache:
            self._cache = {key: load_classification_data(config["data"])}
        return self._cache[key]

    def _groups(self, config, data):
        if config.get("head") != "hierarchical":
            return None
        return config.get("coarse_groups") or cluster_classes(data.x_train, data.y_train,
                                                              data.num_classes)

    def _targets(self, labels, groups):
        if groups is None:
            return {"probabilities": labels}
        coarse_of = np.zeros(max(max(g) for g in groups) + 1, dtype=np.int32)
        for k, group in enumerate(groups):
            coarse_of[group] = k
        return {"probabilities": labels, "coarse": coarse_of[labels]}

    def train_dataset(self, config):
        data = self.data(config)
        augmenter = build_augmenter(config.get("augment") or {}, int(config.get("seed", 0)))
        return make_dataset(data.x_train, self._targets(data.y_train, self._groups(config, data)),
                            int(config["batch_size"]), training=True,
                            seed=int(config.get("seed", 0)), augmenter=augmenter)

    def eval_dataset(self, config, split="val"):
        data = self.data(config)
        x, y = (data.x_val, data.y_val) if split == "val" else (data.x_test, data.y_test)
        return make_dataset(x, self._targets(y, self._groups(config, data)),
                            int(config["batch_size"]), training=False, seed=0)

    # -- model ------------------------------------------------------------------------------
    def build_model(self, config):
        data = self.data(config)
        return build_classifier(
            config["backbone"], data.num_classes, data.x_train.shape[1:],
            head=config.get("head", "softmax"), dropout=float(config.get("dropout", 0.0)),
            weights=config.get("weights"), coarse_groups=self._groups(config, data),
            backbone_args=config.get("backbone_args") or {})

    def loss(self, config):
        smoothing = float(config.get("label_smoothing") or 0.0)
        fine = (keras.losses.SparseCategoricalCrossentropy() if not smoothing
                else SparseCrossentropyWithSmoothing(smoothing))
        losses = {"probabilities": fine}
        if config.get("head") == "hierarchical":
            losses["coarse"] = keras.losses.SparseCategoricalCrossentropy()
        return losses

    def metrics(self, config):
        k = min(int(config.get("top_k", 5)), self.data(config).num_classes)
        return {"probabilities": [keras.metrics.SparseCategoricalAccuracy(name="top1"),
                                  keras.metrics.SparseTopKCategoricalAccuracy(k, name="top5")]}

    def model_info(self, config):
        data = self.data(config)
        return {"task": self.name, "class_names": data.class_names,
                "input_shape": list(data.x_train.shape[1:]), "backbone": config["backbone"],
                "top_k": min(int(config.get("top_k", 5)), data.num_classes)}

    # -- evaluation -------------------------------------------------------------------------
    def evaluate(self, model, config, split="test", run_dir=None):
        from sklearn.metrics import confusion_matrix

        data = self.data(config)
        x, y = (data.x_test, data.y_test) if split == "test" else (data.x_val, data.y_val)
        probs = predict_probabilities(model, x, int(config["batch_size"]))
        k = min(int(config.get("top_k", 5)), data.num_classes)
        metrics = topk_accuracy(probs, y, k)
        matrix = confusion_matrix(y, probs.argmax(1), labels=range(data.num_classes))
        per_class = matrix.diagonal() / np.maximum(matrix.sum(1), 1)
        metrics.update({"split": split, "num_examples": int(len(y)),
                        "per_class_accuracy": dict(zip(data.class_names,
                                                       per_class.round(4).tolist()))})
        if run_dir is not None:
            from cnn_apps.training.plots import plot_confusion_matrix

            plot_confusion_matrix(matrix, data.class_names, Path(run_dir) / "confusion_matrix.png")
        return metrics

    # -- inference --------------------------------------------------------------------------
    def predict(self, model, images, info, top_k=None):
        """Top-k classes per image: ``[{"top_k": [{"class", "index", "score"}, ...]}]``.

        ``images``: uint8/float array (N, H, W, C) at the model's input size, raw 0..255.
        """
        probs = predict_probabilities(model, np.asarray(images, dtype=np.float32), 32)
        names = info.get("class_names") or [str(i) for i in range(probs.shape[1])]
        k = min(top_k or info.get("top_k", 5), probs.shape[1])
        results = []
        for row in probs:
            order = np.argsort(-row)[:k]
            results.append({"top_k": [{"class": names[i], "index": int(i),
                                       "score": round(float(row[i]), 6)} for i in order]})
        return results

    def serving_endpoints(self, model, info):
        from cnn_apps.export.signatures import image_classification_endpoints

        return image_classification_endpoints(model, info)

    def example_inputs(self, info, batch_size=2):
        rng = np.random.default_rng(0)
        return rng.uniform(0, 255, size=(batch_size, *info["input_shape"])).astype(np.float32)


def predict_probabilities(model, images, batch_size):
    out = model.predict(images, batch_size=batch_size, verbose=0)
    return np.asarray(out["probabilities"] if isinstance(out, dict) else out)


def topk_accuracy(probs: np.ndarray, labels: np.ndarray, k: int) -> dict:
    """``{"top1", "top5"}`` (the second key is named for k=5 whatever k is, plus ``"k"``)."""
    topk = np.argsort(-probs, axis=1)[:, :k]
    return {"top1": float(np.mean(topk[:, 0] == labels)),
            "top5": float(np.mean((topk == labels[:, None]).any(axis=1))), "k": int(k)}


@keras.saving.register_keras_serializable(package="cnn_apps")
class SparseCrossentropyWithSmoothing(keras.losses.Loss):
    """Sparse categorical cross-entropy with label smoothing ε: the one-hot target becomes
    (1 − ε)·onehot + ε/C (Keras' sparse loss has no smoothing option)."""

    def __init__(self, smoothing=0.1, name="sparse_crossentropy_with_smoothing", **kwargs):
        super().__init__(name=name, **kwargs)
        self.smoothing = float(smoothing)

    def call(self, y_true, y_pred):
        classes = keras.ops.shape(y_pred)[-1]
        labels = keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32")
        return keras.losses.categorical_crossentropy(
            keras.ops.one_hot(labels, classes), y_pred, label_smoothing=self.smoothing)

    def get_config(self):
        return {**super().get_config(), "smoothing": self.smoothing}
