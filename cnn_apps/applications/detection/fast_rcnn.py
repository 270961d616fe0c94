"""Fast R-CNN (Girshick 2015; survey S0 §5.2, SEED_CHECKLIST §14.2) with optional OHEM
(Shrivastava et al. 2016; T-DET-10), on external region proposals.

The model takes ``{"images": (B, S, S, 3) raw pixels, "proposals": (B, R, 4)}`` with the
proposals normalized ``(ymin, xmin, ymax, xmax)`` (selective search, all-zero rows = padding).
The backbone runs once per image; ``level`` is the shared feature map, optionally reduced to
``feature_channels`` by a 1×1 conv + ReLU. The default P3 (stride 8) gives objects of 7-64 px
in 128 px images 1-8 cells, the scale VGG16's conv5 (stride 16) gives objects in the paper's
600 px images; on ``shapes`` P4 reached AP50 0.64 and P3 0.79 (selective search with 300
boxes), 0.86 with 800 boxes, 0.89 with 64 instead of 128 reduced channels. Each RoI is
max-pooled to ``roi_pool_size`` by ``cnn_apps.layers.RoIPooling2D`` (the paper's RoI pooling
layer) and fed to the shared box head (``two_stage.build_box_head``): fc layers, C + 1 softmax
logits and 4C class-specific deltas.

Training (end to end, one stage): ``two_stage.sample_roi_targets`` draws ``batch_rois`` RoIs
per image (ground truth appended, ``positive_fraction`` foreground at IoU >= ``fg_iou``,
background in [``bg_iou_low``, ``bg_iou_high``)) and ``two_stage.fast_rcnn_loss`` applies
softmax cross-entropy + λ smooth L1. With ``ohem: true`` every proposal (and gt box) is
forwarded, the per-RoI loss computed for all of them, and only the ``ohem_batch`` hardest
per image are back-propagated.

Inference: every proposal → the raw layout of ``two_stage`` (B, R, 5C); ``postprocess`` =
class-aware NMS (+ optional box voting).

Example::

    model = build_model(config, num_classes=4)            # a FastRCNN keras.Model
    raw = model({"images": images, "proposals": proposals})["raw"]
"""

from __future__ import annotations

import keras

from cnn_apps.applications.detection import two_stage
from cnn_apps.applications.detection.common import backbone_features, pick_level
from cnn_apps.applications.detection.detectors import Detector
from cnn_apps.errors import ConfigError
from cnn_apps.layers.roi import RoIPooling2D

_DEFAULTS = {"level": "P3", "feature_channels": 64, "roi_pool_size": 7}


def section_settings(config):
    """The ``fast_rcnn:`` section with defaults, checked (ConfigError names the key)."""
    section = dict(config.get("fast_rcnn") or {})
    values = {**_DEFAULTS, **{k: v for k, v in section.items() if k in _DEFAULTS}}
    values.update(two_stage.head_settings(section, "fast_rcnn"))
    values["level"] = str(values["level"])
    for key in ("feature_channels", "roi_pool_size", "batch_rois", "ohem_batch"):
        values[key] = int(values[key])
        least = 0 if key == "feature_channels" else 1
        if values[key] < least:
            raise ConfigError(f"fast_rcnn.{key} must be >= {least}, got {values[key]}")
    return values


def build_feature_net(config, s):
    """images → the shared conv feature map (B, H, W, channels)."""
    size = int(config["image_size"])
    inputs, features = backbone_features(config, (size, size, 3), levels=[s["level"]])
    fmap = pick_level(features, s["level"], config["backbone"])
    if s["feature_channels"]:
        fmap = keras.layers.Conv2D(s["feature_channels"], 1, activation="relu",
                                   name="feature_reduce")(fmap)
    return keras.Model(inputs, fmap, name="features")


@keras.saving.register_keras_serializable(package="cnn_apps")
class FastRCNN(two_stage.TwoStageModel):
    """Fast R-CNN (module doc) on any registered backbone with pyramid levels.

    Args:
        num_classes: C object classes. image_size: square input side (raw 0..255 pixels).
        backbone, backbone_args: the backbone name and its builder arguments.
        settings: the ``fast_rcnn:`` config section (defaults filled in by ``settings``).
        backbone_weights: ``weights`` for the backbone at construction (not saved).
        seed: of the RoI sampling.

    ``call({"images", "proposals"})`` → ``{"raw": (B, R, 5C)}``; ``fit`` on
    ``({"images", "proposals"}, {"raw": gt})`` logs ``loss``, ``cls_loss``, ``box_loss``.
    """

    loss_names = ("loss", "cls_loss", "box_loss")

    def __init__(self, num_classes, image_size, backbone, backbone_args=None, settings=None,
                 backbone_weights=None, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.image_size = int(num_classes), int(image_size)
        self.backbone_name, self.backbone_args = str(backbone), dict(backbone_args or {})
        self.settings = section_settings({"fast_rcnn": settings or {}})
        self.seed = int(seed)
        s = self.settings
        config = {"backbone": self.backbone_name, "backbone_args": self.backbone_args,
                  "image_size": self.image_size, "weights": backbone_weights}
        self.feature_net = build_feature_net(config, s)
        channels = int(self.feature_net.output.shape[-1])
        self.roi_pool = RoIPooling2D(s["roi_pool_size"], name="roi_pool")
        self.roi_pool.build([(None, None, None, channels), (None, None, 4)])
        self.box_head = two_stage.build_box_head(s["roi_pool_size"], channels,
                                                 self.num_classes, s["head_units"])
        self._init_trackers(self.seed)
        self.built = True

    @staticmethod
    def _split(inputs):
        if not isinstance(inputs, dict) or "images" not in inputs or "proposals" not in inputs:
            raise ValueError("FastRCNN takes a dict {'images': (B, S, S, 3), 'proposals': "
                             "(B, R, 4) normalized yxyx}")
        return inputs["images"], keras.ops.cast(inputs["proposals"], "float32")

    def call(self, inputs, training=False):
        images, proposals = self._split(inputs)
        fmap = self.feature_net(images, training=training)
        head = self.box_head(self.roi_pool([fmap, proposals]), training=training)
        return {"raw": two_stage.roi_raw_outputs(head["class_logits"], head["box_deltas"],
                                                 proposals)}

    def detection_losses(self, inputs, gt, training):
        s = self.settings
        images, proposals = self._split(inputs)
        fmap = self.feature_net(images, training=training)
        if s["ohem"]:  # forward every candidate; the loss keeps the hardest
            count = int(proposals.shape[1]) + int(gt.shape[1])
            rois, labels, targets = two_stage.sample_roi_targets(
                proposals, gt, self.num_classes, count, 1.0, s["fg_iou"], s["bg_iou_high"],
                s["bg_iou_low"], seed=self.seed_generator)
        else:
            rois, labels, targets = two_stage.sample_roi_targets(
                proposals, gt, self.num_classes, s["batch_rois"], s["positive_fraction"],
                s["fg_iou"], s["bg_iou_high"], s["bg_iou_low"], seed=self.seed_generator)
        head = self.box_head(self.roi_pool([fmap, rois]), training=training)
        out = two_stage.fast_rcnn_loss(head["class_logits"], head["box_deltas"], labels,
                                       targets, s["box_weight"],
                                       s["ohem_batch"] if s["ohem"] else None, rois,
                                       s["ohem_nms_iou"])
        return {"loss": out["loss"] if training else out["balanced"],
                "cls_loss": out["cls_loss"], "box_loss": out["box_loss"]}

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "image_size": self.image_size, "backbone": self.backbone_name,
                "backbone_args": two_stage.plain(self.backbone_args),
                "settings": two_stage.plain(self.settings), "seed": self.seed}


# -- Detector plumbing ----------------------------------------------------------------------
def build_model(config, num_classes):
    return FastRCNN(num_classes, int(config["image_size"]), config["backbone"],
                    two_stage.backbone_args(config), dict(config.get("fast_rcnn") or {}),
                    backbone_weights=config.get("weights"), seed=int(config.get("seed", 0)),
                    name=f"fast_rcnn_{config['backbone']}")


def info(config, num_classes, model):
    s = section_settings(config)
    return {"name": "fast_rcnn", "num_classes": int(num_classes),
            "box_voting": s["box_voting"], "voting_iou": s["voting_iou"],
            "raw_layout": "(B, R, 4C + C): class-specific boxes, then class probabilities"}


def compile_model(model, config, learning_rate, info):
    from cnn_apps.training.fit import make_optimizer

    model.compile(optimizer=make_optimizer({**config, "learning_rate": learning_rate}),
                  jit_compile=False)


def _no_keras_loss(config, info):
    return None  # the loss lives in FastRCNN.train_step


DETECTOR = Detector("fast_rcnn", "Fast R-CNN: RoI pooling on shared features, softmax + box "
                    "regression end to end, optional OHEM",
                    build_model, info, _no_keras_loss, two_stage.postprocess,
                    _compile=compile_model, needs_proposals=True, supports_jit=False)
