"""Embedding network, in-batch pair loss, P×K batches and retrieval metrics.

Survey S0 §3.4.3-§3.4.4 (SEED_CHECKLIST LS-06 to LS-09) and §5 (verification, re-id,
retrieval). One shared tower f maps an image to a unit-norm embedding

    f(x) = normalize(W · GAP(backbone(preprocess(x))) + b),    ‖f(x)‖₂ = 1,

so the Siamese network of the contrastive losses and the triplet network are the same weights
applied to every image of a batch; the losses compare the embeddings inside the batch.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from cnn_apps import backbones
from cnn_apps.backbones.preprocessing import ImagePreprocessing
from cnn_apps.losses._common import integer_labels

__all__ = ["build_embedding_net", "InBatchPairLoss", "pk_batch_indices", "recall_at_k",
           "verification_auc", "pairwise_squared_distances_np"]


def build_embedding_net(backbone: str, input_shape, embedding_dim: int = 64, *, weights=None,
                        backbone_args=None):
    """``images (raw 0..255) -> {"embeddings": (N, embedding_dim), unit L2 norm}``.

    The backbone (any registered name) is the nested model ``backbone``; its final feature
    map is global-average pooled, projected by a Dense layer and L2-normalized.
    """
    if int(embedding_dim) < 1:
        raise ValueError(f"embedding_dim must be a positive integer, got {embedding_dim}")
    spec = backbones.get_spec(backbone)
    inputs = keras.Input(shape=tuple(input_shape), name="images")
    x = ImagePreprocessing(spec.preprocessing, name="preprocess")(inputs)
    net = backbones.create(backbone, input_shape=input_shape, weights=weights,
                           **(backbone_args or {}))
    net.name = "backbone"
    features = net(x)
    if len(features.shape) == 4:
        features = keras.layers.GlobalAveragePooling2D(name="avg_pool")(features)
    projected = keras.layers.Dense(int(embedding_dim), name="projection",
                                   dtype="float32")(features)
    embeddings = keras.layers.UnitNormalization(axis=-1, name="embeddings",
                                                dtype="float32")(projected)
    return keras.Model(inputs, {"embeddings": embeddings}, name=f"{backbone}_embedding")


@keras.saving.register_keras_serializable(package="cnn_apps")
class InBatchPairLoss(keras.losses.Loss):
    """Applies a pair loss (``ContrastiveLoss``, ``DoubleMarginContrastiveLoss``) to every
    pair (i, j), i < j, of a labelled batch of embeddings, class-balanced.

    The pair loss sees y_true = [label_i == label_j] and y_pred = stack(z_i, z_j) (N², 2, D).
    Matching and non-matching pairs are weighted so each kind contributes half of the total
    (the whole total when the batch has only one kind):

        L = ½·mean_{i<j, y_i = y_j} ℓ(1, z_i, z_j) + ½·mean_{i<j, y_i ≠ y_j} ℓ(0, z_i, z_j)

    With P×K batches only ~(K−1)/(PK−1) of the pairs match, so unweighted averaging would let
    the negatives dominate. ``call`` returns one value per sample (its row of pairs, scaled
    by N) whose default mean over the batch is L.

    Args:
        pair_loss: a ``keras.losses.Loss`` with ``call(y_match, pairs (M, 2, D))`` returning
            one value per pair, e.g. ``ContrastiveLoss(margin=1.0)``.

    y_true: integer labels (N,) or (N, 1). y_pred: embeddings (N, D).

    Example:
        loss = InBatchPairLoss(ContrastiveLoss(margin=1.0))
        model.compile("adam", loss={"embeddings": loss})
        model.fit(images, {"embeddings": labels}, batch_size=32)
    """

    def __init__(self, pair_loss, name="in_batch_pair_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        if isinstance(pair_loss, dict):
            pair_loss = keras.losses.deserialize(pair_loss)
        if not isinstance(pair_loss, keras.losses.Loss):
            raise ValueError("pair_loss must be a keras.losses.Loss taking (match, pairs), "
                             f"got {pair_loss!r}")
        self.pair_loss = pair_loss

    def call(self, y_true, y_pred):
        if len(ops.shape(y_pred)) != 2:
            raise ValueError(f"y_pred must be embeddings of shape (N, D), got shape "
                             f"{tuple(ops.shape(y_pred))}")
        labels = integer_labels(y_true)
        n = ops.shape(y_pred)[0]
        pairs = ops.stack([ops.repeat(y_pred, n, axis=0),
                           ops.tile(y_pred, (n, 1))], axis=1)  # row i·n + j = (z_i, z_j)
        same = ops.equal(ops.expand_dims(labels, 1), ops.expand_dims(labels, 0))
        index = ops.arange(n)
        upper = ops.less(ops.expand_dims(index, 1), ops.expand_dims(index, 0))
        dtype = y_pred.dtype
        per_pair = ops.reshape(
            self.pair_loss.call(ops.cast(ops.reshape(same, (-1,)), dtype), pairs), (n, n))
        matching = ops.cast(ops.logical_and(upper, same), dtype)
        non_matching = ops.cast(ops.logical_and(upper, ops.logical_not(same)), dtype)
        n_match, n_non = ops.sum(matching), ops.sum(non_matching)
        kinds = ops.cast(n_match > 0, dtype) + ops.cast(n_non > 0, dtype)
        share = 1.0 / ops.maximum(kinds, 1.0)
        weights = (matching * share / ops.maximum(n_match, 1.0)
                   + non_matching * share / ops.maximum(n_non, 1.0))
        return ops.sum(weights * per_pair, axis=1) * ops.cast(n, dtype)

    def get_config(self):
        return {**super().get_config(),
                "pair_loss": keras.losses.serialize(self.pair_loss)}


def pk_batch_indices(labels: np.ndarray, classes_per_batch: int, samples_per_class: int,
                     rng: np.random.Generator) -> np.ndarray:
    """One P×K batch: P distinct classes drawn at random, K examples of each (without
    replacement where the class has K, with replacement otherwise), grouped by class."""
    classes = np.unique(labels)
    p = min(int(classes_per_batch), len(classes))
    chosen = rng.choice(classes, size=p, replace=False)
    parts = []
    for label in chosen:
        members = np.flatnonzero(labels == label)
        parts.append(rng.choice(members, size=int(samples_per_class),
                                replace=len(members) < int(samples_per_class)))
    return np.concatenate(parts)


def pairwise_squared_distances_np(embeddings: np.ndarray) -> np.ndarray:
    e = np.asarray(embeddings, dtype=np.float64)
    sq = np.sum(e * e, axis=1)
    return np.maximum(sq[:, None] + sq[None, :] - 2.0 * e @ e.T, 0.0)


def recall_at_k(embeddings: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Fraction of queries with a same-label example among their k nearest neighbours
    (Euclidean) in the rest of the set (leave-one-out retrieval)."""
    labels = np.asarray(labels)
    if len(labels) < 2:
        raise ValueError(f"recall_at_k needs at least 2 embeddings, got {len(labels)}")
    if not 1 <= int(k) < len(labels):
        raise ValueError(f"k must be in [1, {len(labels) - 1}], got {k}")
    d = pairwise_squared_distances_np(embeddings)
    np.fill_diagonal(d, np.inf)
    nearest = np.argsort(d, axis=1, kind="stable")[:, :int(k)]
    return float(np.mean(np.any(labels[nearest] == labels[:, None], axis=1)))


def verification_auc(embeddings: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC of "same class?" over all pairs i < j, scored by −Euclidean distance."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels)
    i, j = np.triu_indices(len(labels), k=1)
    same = labels[i] == labels[j]
    if same.all() or not same.any():
        raise ValueError("verification_auc needs both matching and non-matching pairs "
                         "(labels with at least two classes, one of them repeated)")
    distance = np.sqrt(pairwise_squared_distances_np(embeddings)[i, j])
    return float(roc_auc_score(same, -distance))
