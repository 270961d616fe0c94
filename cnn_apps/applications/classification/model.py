"""Classification models: any registered backbone + a softmax or coarse-to-fine head.

Inputs are raw pixels in [0, 255]; the backbone's preprocessing is the first layer, so the
saved model, its SavedModel and ONNX exports all take the same pixels.
"""

from __future__ import annotations

import keras
import numpy as np

from cnn_apps import backbones
from cnn_apps.backbones.preprocessing import ImagePreprocessing
from cnn_apps.errors import ConfigError

HEADS = ("softmax", "hierarchical", "paper")


def build_classifier(backbone: str, num_classes: int, input_shape, *, head="softmax",
                     dropout=0.2, weights=None, coarse_groups=None, backbone_args=None):
    """``image -> {"probabilities": (N, num_classes)}`` (+ ``"coarse"`` for the HD-CNN head).

    Heads:
      * ``softmax``: global average pooling → dropout → Dense softmax (survey S0 §5.1).
      * ``hierarchical``: HD-CNN (Yan et al.; survey S0 §5.1): a coarse classifier over groups
        of classes and one fine classifier per group on the shared features; the final
        probability is the coarse-weighted average p(j) = Σ_k p(k)·p_k(j).
      * ``paper``: the backbone's own classifier (e.g. LeNet-5's FC120-FC84).
    """
    if head not in HEADS:
        raise ConfigError(f"head must be one of {', '.join(HEADS)}, got '{head}'")
    spec = backbones.get_spec(backbone)
    inputs = keras.Input(shape=tuple(input_shape), name="images")
    x = ImagePreprocessing(spec.preprocessing, name="preprocess")(inputs)
    if head == "paper":
        net = backbones.create(backbone, input_shape=input_shape, num_classes=num_classes,
                               **(backbone_args or {}))
        if weights not in (None, "imagenet"):
            backbones.load_weights_file(net, weights)
        net.name = "backbone"  # the whole paper network: fine-tuning freezes all of it
        probs = keras.layers.Identity(name="probabilities", dtype="float32")(net(x))
        return keras.Model(inputs, {"probabilities": probs}, name=f"{backbone}_classifier")
    net = backbones.create(backbone, input_shape=input_shape, weights=weights,
                           **(backbone_args or {}))
    net.name = "backbone"
    features = net(x)
    if len(features.shape) == 4:
        features = keras.layers.GlobalAveragePooling2D(name="avg_pool")(features)
    features = keras.layers.Dropout(dropout, name="dropout")(features)
    if head == "softmax":
        probs = keras.layers.Dense(num_classes, activation="softmax", name="probabilities",
                                   dtype="float32")(features)
        return keras.Model(inputs, {"probabilities": probs}, name=f"{backbone}_classifier")
    groups = validate_groups(coarse_groups, num_classes)
    coarse = keras.layers.Dense(len(groups), activation="softmax", name="coarse",
                                dtype="float32")(features)
    fine = [keras.layers.Dense(num_classes, activation="softmax", name=f"fine_{k}",
                               dtype="float32")(features) for k in range(len(groups))]
    fine = keras.layers.Concatenate(axis=1, name="fine_stack")(
        [keras.layers.Reshape((1, num_classes))(f) for f in fine])
    probs = CoarseWeightedAverage(name="probabilities", dtype="float32")([coarse, fine])
    return keras.Model(inputs, {"probabilities": probs, "coarse": coarse},
                       name=f"{backbone}_hdcnn")


@keras.saving.register_keras_serializable(package="cnn_apps")
class CoarseWeightedAverage(keras.layers.Layer):
    """HD-CNN probabilistic averaging: p(j) = Σ_k B_k · p_k(j).

    Inputs: coarse probabilities B (N, K) and fine probabilities (N, K, C); output (N, C).
    """

    def call(self, inputs):
        coarse, fine = inputs
        return keras.ops.einsum("nk,nkc->nc", coarse, fine)

    def compute_output_shape(self, input_shapes):
        return (input_shapes[1][0], input_shapes[1][2])


def validate_groups(groups, num_classes):
    if not groups:
        raise ConfigError("head=hierarchical needs coarse_groups (list of lists of class indices)")
    flat = sorted(int(c) for g in groups for c in g)
    if flat != list(range(num_classes)):
        raise ConfigError(f"coarse_groups must partition the classes 0..{num_classes - 1} "
                          f"(each exactly once), got {groups}")
    return [list(map(int, g)) for g in groups]


def cluster_classes(images: np.ndarray, labels: np.ndarray, num_classes: int,
                    num_groups: int | None = None) -> list:
    """Coarse groups for HD-CNN by agglomerative clustering of class-mean images (a cheap
    stand-in for the paper's clustering of a trained net's confusion matrix)."""
    from sklearn.cluster import AgglomerativeClustering

    num_groups = num_groups or max(2, int(round(np.sqrt(num_classes))))
    means = np.stack([images[labels == c].reshape((labels == c).sum(), -1).mean(0)
                      for c in range(num_classes)])
    assignment = AgglomerativeClustering(n_clusters=num_groups).fit_predict(means)
    return [sorted(np.flatnonzero(assignment == k).tolist()) for k in range(num_groups)]
