"""The metric-learning ``Task``: Siamese / triplet embeddings on any registered backbone.

``cnn-apps train metric_learning loss=contrastive|double_margin|triplet|coupled_clusters``.

Batches: every training batch is P×K (``classes_per_batch`` classes × ``samples_per_class``
images each, classes drawn at random per batch) so each anchor has positives and negatives.
The triplet and coupled-clusters losses mine their triplets / clusters inside that batch; the
contrastive and double-margin losses use *every* pair of the batch through
``InBatchPairLoss`` (class-balanced: matching and non-matching pairs count half each).
Evaluation embeds the test split and reports recall@1 / recall@5 (leave-one-out nearest
neighbour retrieval) and the verification ROC AUC over all test pairs (score −distance).
"""

from __future__ import annotations

import numpy as np

from cnn_apps.applications.base import Task
from cnn_apps.applications.metric_learning.model import (InBatchPairLoss, build_embedding_net,
                                                         pk_batch_indices, recall_at_k,
                                                         verification_auc)
from cnn_apps.data.pipeline import build_augmenter
from cnn_apps.errors import ConfigError, DataError

LOSSES = ("contrastive", "double_margin", "triplet", "coupled_clusters")


def load_metric_data(data_cfg: dict):
    """Splits of ``digits``, ``lfw_subset`` (faces vs non-faces) or an ``image_folder``."""
    from cnn_apps.data.faces import load_lfw_subset
    from cnn_apps.data.images import load_digits, load_image_folder

    loaders = {"digits": load_digits, "lfw_subset": load_lfw_subset,
               "image_folder": load_image_folder}
    name = data_cfg.get("dataset")
    if name not in loaders:
        raise DataError(f"unknown metric-learning dataset '{name}' (data.dataset); "
                        f"valid: {', '.join(loaders)}")
    return loaders[name](data_cfg)


def make_loss(config):
    """The configured ``cnn_apps.losses`` object (pair losses wrapped in ``InBatchPairLoss``)."""
    from cnn_apps import losses

    name = config.get("loss")
    distance = config.get("distance", "squared_l2")
    if name == "contrastive":
        return InBatchPairLoss(losses.ContrastiveLoss(margin=float(config["contrastive_margin"]),
                                                      distance=distance))
    if name == "double_margin":
        return InBatchPairLoss(losses.DoubleMarginContrastiveLoss(
            m1=float(config["double_margin_m1"]), m2=float(config["double_margin_m2"]),
            distance=distance))
    if name == "triplet":
        return losses.TripletLoss(margin=float(config["triplet_margin"]),
                                  mining=config.get("triplet_mining", "batch_all"),
                                  distance=distance)
    if name == "coupled_clusters":
        return losses.CoupledClustersLoss(margin=float(config["coupled_clusters_margin"]))
    raise ConfigError(f"loss must be one of {', '.join(LOSSES)}, got '{name}'")


class MetricLearningTask(Task):
    name = "metric_learning"
    description = "Siamese/triplet embeddings on any backbone; recall@1, verification ROC AUC"
    monitor = ("val_loss", "min")

    def __init__(self):
        self._cache = {}
        self._gallery = {}

    def data(self, config):
        key = repr(sorted(config["data"].items()))
        if key not in self._cache:
            self._cache = {key: load_metric_data(config["data"])}
        return self._cache[key]

    # -- data -------------------------------------------------------------------------------
    def train_dataset(self, config):
        """An endless-per-epoch stream of P×K batches: ``(images, {"embeddings": labels})``."""
        import tensorflow as tf

        data = self.data(config)
        p, k = int(config["classes_per_batch"]), int(config["samples_per_class"])
        if p < 2 or k < 2:
            raise ConfigError(f"classes_per_batch and samples_per_class must be >= 2 (each "
                              f"anchor needs a positive and a negative), got {p} and {k}")
        if data.num_classes < 2:
            raise DataError("metric learning needs at least two classes")
        batch = min(p, data.num_classes) * k
        steps = max(1, len(data.y_train) // batch)
        rng = np.random.default_rng(int(config.get("seed", 0)))
        labels = data.y_train

        def batches():
            for _ in range(steps):
                yield pk_batch_indices(labels, p, k, rng)

        images = tf.constant(data.x_train)
        label_tensor = tf.constant(labels.astype(np.int32))
        ds = tf.data.Dataset.from_generator(
            batches, output_signature=tf.TensorSpec((batch,), tf.int64))
        ds = ds.apply(tf.data.experimental.assert_cardinality(steps))  # Keras sees the epoch end
        ds = ds.map(lambda idx: (tf.cast(tf.gather(images, idx), tf.float32),
                                 {"embeddings": tf.gather(label_tensor, idx)}))
        augmenter = build_augmenter(config.get("augment") or {}, int(config.get("seed", 0)))
        if augmenter is not None:
            ds = ds.map(lambda x, y: (tf.clip_by_value(augmenter(x, training=True), 0.0, 255.0),
                                      y))
        return ds.prefetch(tf.data.AUTOTUNE)

    def eval_dataset(self, config, split="val"):
        import tensorflow as tf

        data = self.data(config)
        x, y = (data.x_val, data.y_val) if split == "val" else (data.x_test, data.y_test)
        batch = int(config["classes_per_batch"]) * int(config["samples_per_class"])
        ds = tf.data.Dataset.from_tensor_slices((x, {"embeddings": y.astype(np.int32)}))
        return ds.batch(batch).map(lambda a, b: (tf.cast(a, tf.float32), b)).prefetch(2)

    # -- model ------------------------------------------------------------------------------
    def build_model(self, config):
        data = self.data(config)
        return build_embedding_net(config["backbone"], data.x_train.shape[1:],
                                   int(config["embedding_dim"]), weights=config.get("weights"),
                                   backbone_args=config.get("backbone_args") or {})

    def loss(self, config):
        return {"embeddings": make_loss(config)}

    def model_info(self, config):
        data = self.data(config)
        return {"task": self.name, "class_names": data.class_names,
                "input_shape": list(data.x_train.shape[1:]), "backbone": config["backbone"],
                "embedding_dim": int(config["embedding_dim"]), "loss": config["loss"],
                "data": dict(config["data"])}

    # -- evaluation -------------------------------------------------------------------------
    def evaluate(self, model, config, split="test", run_dir=None):
        data = self.data(config)
        x, y = (data.x_test, data.y_test) if split == "test" else (data.x_val, data.y_val)
        emb = embed(model, x)
        return {"split": split, "num_examples": int(len(y)), "loss": config["loss"],
                "recall_at_1": recall_at_k(emb, y, 1),
                "recall_at_5": recall_at_k(emb, y, min(5, len(y) - 1)),
                "verification_auc": verification_auc(emb, y)}

    # -- inference --------------------------------------------------------------------------
    def predict(self, model, images, info, top_k=None):
        """Per image: its ``embedding`` and the ``top_k`` nearest gallery classes (the
        training split of ``info["data"]``), scored by cosine similarity to the class's
        nearest gallery embedding (embeddings are unit vectors: similarity = 1 − d²/2)."""
        emb = embed(model, np.asarray(images, dtype=np.float32))
        results = [{"embedding": np.round(e, 6).tolist()} for e in emb]
        if not info.get("data"):
            return results
        gallery, labels, names = self._gallery_of(model, info)
        similarity = emb @ gallery.T
        classes = np.unique(labels)
        best = np.stack([similarity[:, labels == c].max(1) for c in classes], axis=1)
        k = min(int(top_k or 5), len(classes))
        for result, row in zip(results, best):
            order = np.argsort(-row)[:k]
            result["top_k"] = [{"class": names[classes[i]], "index": int(classes[i]),
                                "score": round(float(row[i]), 6)} for i in order]
        return results

    def _gallery_of(self, model, info):
        key = (id(model), repr(sorted(info["data"].items())))
        if key not in self._gallery:
            data = load_metric_data(info["data"])
            self._gallery = {key: (embed(model, data.x_train), data.y_train,
                                   data.class_names)}
        return self._gallery[key]

    def serving_endpoints(self, model, info):
        """``serving_default``: encoded image bytes → ``embeddings``; ``predict_tensor``:
        float pixels (N, H, W, C) in 0..255 → ``embeddings``."""
        import tensorflow as tf

        from cnn_apps.export.signatures import decode_image_batch

        height, width, channels = (int(v) for v in info["input_shape"])

        def outputs(images):
            out = model(images, training=False)
            return {"embeddings": tf.cast(out["embeddings"], tf.float32)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        def serve_bytes(image_bytes):
            return outputs(decode_image_batch(image_bytes, height, width, channels))

        @tf.function(input_signature=[tf.TensorSpec([None, height, width, channels],
                                                    tf.float32, name="images")])
        def serve_tensor(images):
            return outputs(images)

        return {"serving_default": serve_bytes, "predict_tensor": serve_tensor}

    def example_inputs(self, info, batch_size=2):
        rng = np.random.default_rng(0)
        return rng.uniform(0, 255, size=(batch_size, *info["input_shape"])).astype(np.float32)


def embed(model, images, batch_size: int = 128) -> np.ndarray:
    """Embeddings (N, D) of raw-pixel images."""
    out = model.predict(np.asarray(images, dtype=np.float32), batch_size=batch_size, verbose=0)
    return np.asarray(out["embeddings"] if isinstance(out, dict) else out)
