"""SPP-net detection (He et al. 2014; survey S0 §5.2, SEED_CHECKLIST T-DET-05, P-09): conv
features computed once per image, spatial pyramid pooling of every candidate window into a
fixed-length vector, fully connected layers, then R-CNN's SVM + box-regression stage.

* **Conv features**: the backbone's ``level`` map (default P3, stride 8: the object-to-cell
  scale of the paper's conv5 on large images, as in ``fast_rcnn``; on ``shapes`` AP50 0.55 at
  P4, 0.73 at P3), optionally reduced to ``feature_channels`` by a 1×1 conv + ReLU
  (``fast_rcnn.build_feature_net``).
* **SPP per window** (:class:`RoISpatialPyramidPooling`): for each pyramid level b (``bins``,
  default (1, 2, 4); the paper's detector uses {1, 2, 3, 6}) the window is max-pooled into
  b × b bins by ``cnn_apps.layers.RoIPooling2D`` (the window maps to feature cells
  ``[⌊y·H + ½⌋, ⌊y'·H + ½⌋)``; bin i covers rows ``⌊i·h/b⌋ .. ⌈(i+1)·h/b⌉ − 1`` of it, the
  SPP-net rule of ``SpatialPyramidPooling2D``); the levels are flattened (bins row-major,
  channels innermost) and concatenated: ``channels · Σ b²`` values whatever the window size.
* **FC layers** ``fc_units`` (ReLU + dropout each) → region feature; ``cls_score`` /
  ``bbox_pred`` as in R-CNN (``rcnn.ProposalSVMModel``).
* **Training**: fine-tuning with softmax over C + 1 on sampled windows (as R-CNN's), then
  ``finalize`` = ``rcnn.finalize_svm_stage`` (SVMs with hard negative mining, ridge box
  regressors, saved over ``best.keras``). The paper fine-tunes only the fc layers of an
  ImageNet-pretrained network (``train_backbone: false``); without pretrained weights the
  default ``train_backbone: true`` also trains the conv layers. The CNN and the SVMs are not
  trained jointly (multi-stage, as the survey notes).

Example::

    spp = RoISpatialPyramidPooling(bins=(1, 2, 4))
    vectors = spp([feature_map, rois])          # (B, R, C · 21)
    model = build_model(config, num_classes=4)  # {"images", "proposals"} → {"raw"}
"""

from __future__ import annotations

import functools

import keras
from keras import ops

from cnn_apps.applications.detection import rcnn, two_stage
from cnn_apps.applications.detection.detectors import Detector
from cnn_apps.errors import ConfigError
from cnn_apps.layers.roi import RoIPooling2D

__all__ = ["RoISpatialPyramidPooling", "SPPNet", "settings", "build_model", "DETECTOR"]

_DEFAULTS = {"level": "P3", "feature_channels": 128, "bins": [1, 2, 4], "fc_units": [256, 256],
             "dropout": 0.5, "train_backbone": True, "use_svm": True,
             "svm_proposals_per_image": 100, "svm_images": None}


@keras.saving.register_keras_serializable(package="cnn_apps")
class RoISpatialPyramidPooling(keras.layers.Layer):
    """Spatial pyramid pooling of each region of interest (SPP-net detection; survey S0 §5.2,
    SEED_CHECKLIST P-09 / T-DET-05): RoI max pooling (``RoIPooling2D``) at every pyramid level,
    flattened and concatenated (module doc).

    Called as ``layer([feature_map (B, H, W, C), rois (B, R, 4)])`` with normalized
    ``(ymin, xmin, ymax, xmax)`` rois; returns (B, R, C · Σ b²).

    Args:
        bins: pyramid levels, positive ints, e.g. (1, 2, 4) → 21 bins.

    Example::

        fmap = keras.Input((8, 8, 64)); rois = keras.Input((None, 4))
        out = RoISpatialPyramidPooling((1, 2, 4))([fmap, rois])   # (None, None, 1344)
    """

    def __init__(self, bins=(1, 2, 4), **kwargs):
        super().__init__(**kwargs)
        bins = (bins,) if isinstance(bins, int) else bins
        if (not isinstance(bins, (list, tuple)) or not bins or not all(
                isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in bins)):
            raise ValueError(f"RoISpatialPyramidPooling: `bins` must be a non-empty sequence of "
                             f"positive ints, got {bins!r}.")
        self.bins = tuple(bins)
        self.pools = [RoIPooling2D(b, name=f"roi_pool_{b}") for b in self.bins]

    def build(self, input_shape):
        for pool in self.pools:
            pool.build(input_shape)
        self.built = True

    def compute_output_shape(self, input_shape):
        features, rois = input_shape
        channels = features[-1]
        total = None if channels is None else channels * sum(b * b for b in self.bins)
        return (features[0], rois[1], total)

    def call(self, inputs):
        features, rois = inputs
        channels = int(features.shape[-1])
        levels = []
        for b, pool in zip(self.bins, self.pools):
            pooled = pool([features, rois])  # (B, R, b, b, C)
            shape = ops.shape(pooled)
            levels.append(ops.reshape(pooled, (shape[0], shape[1], b * b * channels)))
        return ops.concatenate(levels, axis=-1) if len(levels) > 1 else levels[0]

    def get_config(self):
        return {**super().get_config(), "bins": list(self.bins)}


def settings(config):
    """The ``sppnet:`` section with defaults (model keys, RoI sampling, SVM stage)."""
    values = rcnn.settings(config, "sppnet", _DEFAULTS)
    values["bins"] = [int(b) for b in values["bins"]]
    values["fc_units"] = [int(u) for u in values["fc_units"]]
    if not values["bins"] or min(values["bins"]) < 1:
        raise ConfigError(f"sppnet.bins must be positive ints, got {values['bins']}")
    if not values["fc_units"] or min(values["fc_units"]) < 1:
        raise ConfigError(f"sppnet.fc_units must be a non-empty list of positive ints, got "
                          f"{values['fc_units']}")
    values["feature_channels"] = int(values["feature_channels"])
    return values


@keras.saving.register_keras_serializable(package="cnn_apps")
class SPPNet(rcnn.ProposalSVMModel):
    """SPP-net detector (module doc).

    Args:
        num_classes: C. image_size: square input side. backbone, backbone_args: the CNN.
        settings: the ``sppnet:`` section. backbone_weights: ``weights`` at construction (not
        saved). seed: RoI sampling seed. score_mode: "softmax" or "svm".
    """

    def __init__(self, num_classes, image_size, backbone, backbone_args=None, settings=None,
                 backbone_weights=None, seed=0, score_mode="softmax", **kwargs):
        from cnn_apps.applications.detection.fast_rcnn import build_feature_net

        super().__init__(**kwargs)
        self.num_classes, self.image_size = int(num_classes), int(image_size)
        self.backbone_name, self.backbone_args = str(backbone), dict(backbone_args or {})
        self.settings = globals()["settings"]({"sppnet": settings or {}})
        self.seed = int(seed)
        s = self.settings
        config = {"backbone": self.backbone_name, "backbone_args": self.backbone_args,
                  "image_size": self.image_size, "weights": backbone_weights}
        self.feature_net = build_feature_net(config, s)
        self.feature_net.trainable = bool(s["train_backbone"])
        self.spp = RoISpatialPyramidPooling(tuple(s["bins"]), name="roi_spp")
        channels = int(self.feature_net.output.shape[-1])
        vector = keras.Input((None, channels * sum(b * b for b in s["bins"])), name="spp")
        x = vector
        for i, units in enumerate(s["fc_units"]):
            x = keras.layers.Dense(units, activation="relu", name=f"fc{i + 6}")(x)
            x = keras.layers.Dropout(float(s["dropout"]), name=f"fc{i + 6}_dropout")(x)
        self.fc = keras.Model(vector, x, name="fc")
        self._init_predictors(self.num_classes, score_mode, s["fc_units"][-1])
        self._init_trackers(self.seed)
        self.built = True

    def roi_features(self, images, rois, training=False):
        """Conv map once per image → SPP per roi → fc layers → (B, R, fc_units[-1])."""
        fmap = self.feature_net(images, training=training and self.settings["train_backbone"])
        return self.fc(self.spp([fmap, ops.cast(rois, "float32")]), training=training)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "image_size": self.image_size, "backbone": self.backbone_name,
                "backbone_args": self.backbone_args, "settings": self.settings,
                "seed": self.seed, "score_mode": self.score_mode}


def build_model(config, num_classes):
    return SPPNet(num_classes, int(config["image_size"]), config["backbone"],
                  rcnn.backbone_args_of(config), dict(config.get("sppnet") or {}),
                  backbone_weights=config.get("weights"), seed=int(config.get("seed", 0)),
                  name=f"sppnet_{config['backbone']}")


def finalize(model, config, task, run_dir):
    return rcnn.finalize_svm_stage(model, config, task, run_dir, "sppnet")


DETECTOR = Detector("sppnet", "SPP-net: conv features once per image, spatial pyramid pooling "
                    "per proposal, fc layers, per-class SVMs + box regression",
                    build_model, functools.partial(rcnn.info, name="sppnet"),
                    rcnn.no_keras_loss, two_stage.postprocess,
                    _compile=rcnn.compile_model, _finalize=finalize, needs_proposals=True,
                    supports_jit=False)
