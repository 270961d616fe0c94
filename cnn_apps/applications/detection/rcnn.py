"""R-CNN (Girshick et al. 2014; survey S0 §5.2, SEED_CHECKLIST T-DET-02/T-DET-03):
selective-search proposals → each warped to a fixed size → CNN features → per-class linear
SVMs, plus class-specific bounding-box regression [ext]. Multi-stage, as in the paper.

Stages (``cnn-apps train detection model=rcnn``):

1. **Proposals** (outside the graph): selective search per image, cached next to the data
   (``proposals.py``; the paper uses about 2000 per image, here ``proposals.max_proposals``).
2. **Fine-tuning** (``train`` → ``model.fit``): every training step draws ``batch_rois``
   regions per image from the proposals plus the ground-truth boxes (``two_stage.
   sample_roi_targets``: foreground IoU >= ``fg_iou`` = 0.5, the rest background, at most
   ``positive_fraction`` = 25% foreground, the paper's 32 of 128), warps each region with
   ``context_fraction`` of context around it (the paper's 16 pixels at 227: dilate the box so
   the context is that fraction of the warped side) to ``warp_size`` × ``warp_size`` (the paper
   227; default 48 for CPU) by bilinear sampling (``RoIAlign2D`` with one sample per output
   pixel), runs the CNN (any registered backbone → its last map → global average pooling →
   ``fc_units`` ReLU → dropout = the region feature) and minimizes softmax cross-entropy over
   C + 1 classes.
3. **SVMs and box regressors** (``finalize``, after ``fit``; ``svm_stage.py``): features of the
   ground-truth boxes and of the top ``svm_proposals_per_image`` proposals of every training
   image; one hinge-loss linear SVM per class with hard negative mining (positives = gt boxes,
   negatives = proposals with IoU < 0.3 with every box of the class) and one ridge box
   regressor per class (proposals with IoU >= 0.6). The SVM weights (times the feature
   scaling) replace the softmax layer ``cls_score`` (background column 0) and the regressors
   fill ``bbox_pred``; the model's ``score_mode`` becomes ``"svm"`` and it is saved over
   ``run_dir/best.keras`` (atomic), so evaluation, export and serving use it unchanged.

Inference: ``{"images", "proposals"}`` → ``{"raw": (B, R, 5C)}`` in the layout of
``two_stage`` (class-specific boxes decoded from the regressors, then scores:
``sigmoid(svm score)`` in ``svm`` mode, ``softmax(p)[1:]`` before the SVM stage); NMS (+ box
voting) by ``two_stage.postprocess``. Warping runs image by image at inference, so memory
grows with R, not B·R.

Example::

    model = build_model(config, num_classes=4)
    raw = model({"images": images, "proposals": proposals})["raw"]   # (B, R, 20)
"""

from __future__ import annotations

import abc
import os

import keras
import numpy as np
from keras import ops

from cnn_apps.applications.detection import two_stage
from cnn_apps.applications.detection.common import backbone_features, pick_level
from cnn_apps.applications.detection.detectors import Detector
from cnn_apps.errors import ConfigError
from cnn_apps.layers.roi import RoIAlign2D
from cnn_apps.ops import box_area

__all__ = ["RCNN", "ProposalSVMModel", "settings", "build_model", "info", "finalize_svm_stage",
           "DETECTOR"]

_DEFAULTS = {"warp_size": 48, "context_fraction": 0.07, "level": None, "fc_units": 256,
             "dropout": 0.5, "use_svm": True, "svm_proposals_per_image": 100,
             "svm_images": None}


def backbone_args_of(config):
    """``backbone_args``, else ``backbone_defaults[<backbone>]`` (the config convention)."""
    args = config.get("backbone_args") or \
        (config.get("backbone_defaults") or {}).get(config["backbone"]) or {}
    if not isinstance(args, dict):
        raise ConfigError(f"backbone_args must be a mapping of builder arguments, got {args!r}")
    return dict(args)


def settings(config, section_name="rcnn", defaults=None):
    """A ``rcnn:`` / ``sppnet:`` section with defaults: the model keys, the RoI sampling keys
    of ``two_stage.head_settings`` and the SVM keys of ``svm_stage.svm_settings``."""
    from cnn_apps.applications.detection.svm_stage import svm_settings

    section = dict(config.get(section_name) or {})
    defaults = _DEFAULTS if defaults is None else defaults
    values = {**defaults, **{k: v for k, v in section.items() if k in defaults}}
    values.update(two_stage.head_settings(section))
    try:
        values.update(svm_settings(section))
    except ValueError as exc:
        raise ConfigError(f"{section_name}: {exc}") from None
    for key in ("warp_size", "fc_units", "svm_proposals_per_image", "batch_rois"):
        if key in values and not isinstance(values[key], (list, tuple)):
            values[key] = int(values[key])
            if values[key] < 1:
                raise ConfigError(f"{section_name}.{key} must be >= 1, got {values[key]}")
    if "warp_size" in values and values["warp_size"] < 16:
        raise ConfigError(f"{section_name}.warp_size must be >= 16 pixels, got "
                          f"{values['warp_size']}")
    if not 0.0 <= float(values.get("dropout", 0.0)) < 1.0:
        raise ConfigError(f"{section_name}.dropout must be in [0, 1), got {values['dropout']}")
    if not 0.0 <= float(values.get("context_fraction", 0.0)) < 0.5:
        raise ConfigError(f"{section_name}.context_fraction must be in [0, 0.5), got "
                          f"{values['context_fraction']}")
    return values


def dilate_boxes(boxes, context_fraction):
    """Grow each box so that ``context_fraction`` of the warped side lies outside it on every
    side: ``h' = h / (1 − 2f)``, same centre (R-CNN's context padding). Zero rows stay zero."""
    if not context_fraction:
        return boxes
    grow = context_fraction / (1.0 - 2.0 * context_fraction)
    h = boxes[..., 2] - boxes[..., 0]
    w = boxes[..., 3] - boxes[..., 1]
    pad = ops.stack([-grow * h, -grow * w, grow * h, grow * w], axis=-1)
    return boxes + pad


class ProposalSVMModel(two_stage.TwoStageModel):
    """Shared body of R-CNN and SPP-net: ``roi_features(images, rois)`` (subclass) →
    ``cls_score`` (C + 1) and ``bbox_pred`` (4C) Dense layers; fine-tuning loss = softmax
    cross-entropy on sampled RoIs; ``score_mode`` "softmax" (after fine-tuning) or "svm"
    (after ``finalize_svm_stage``)."""

    loss_names = ("loss",)

    def _init_predictors(self, num_classes, score_mode, feature_dim):
        if score_mode not in ("softmax", "svm"):
            raise ValueError(f"`score_mode` must be 'softmax' or 'svm'; got '{score_mode}'.")
        self.score_mode = score_mode
        self.cls_score = keras.layers.Dense(
            num_classes + 1, kernel_initializer=keras.initializers.RandomNormal(0.0, 0.01),
            name="cls_score", dtype="float32")
        self.bbox_pred = keras.layers.Dense(4 * num_classes, kernel_initializer="zeros",
                                            name="bbox_pred", dtype="float32")
        # built now: compile() builds the optimizer for the variables that exist
        self.cls_score.build((None, None, int(feature_dim)))
        self.bbox_pred.build((None, None, int(feature_dim)))

    @staticmethod
    def _split(inputs):
        if not isinstance(inputs, dict) or "images" not in inputs or "proposals" not in inputs:
            raise ValueError(f"this detector takes a dict {{'images': (B, S, S, 3), "
                             f"'proposals': (B, R, 4) normalized yxyx}}; got {type(inputs)}")
        return inputs["images"], ops.cast(inputs["proposals"], "float32")

    @abc.abstractmethod
    def roi_features(self, images, rois, training=False):
        """Region features (B, R, d) of the normalized ``rois`` (B, R, 4) of ``images``."""

    def raw_outputs(self, features, rois):
        """Region features (B, R, d) + their boxes → the ``two_stage`` raw layout."""
        logits = self.cls_score(features)
        raw = two_stage.roi_raw_outputs(logits, self.bbox_pred(features), rois)
        if self.score_mode == "softmax":
            return raw
        present = ops.cast(box_area(rois) > 0, "float32")[..., None]
        scores = ops.sigmoid(ops.cast(logits[..., 1:], "float32")) * present
        return ops.concatenate([raw[..., :4 * self.num_classes], scores], axis=-1)

    def call(self, inputs, training=False):
        images, proposals = self._split(inputs)
        return {"raw": self.raw_outputs(self.roi_features(images, proposals, training),
                                        proposals)}

    def detection_losses(self, inputs, gt, training):
        s = self.settings
        images, proposals = self._split(inputs)
        rois, labels, targets = two_stage.sample_roi_targets(
            proposals, gt, self.num_classes, s["batch_rois"], s["positive_fraction"],
            s["fg_iou"], s["bg_iou_high"], s["bg_iou_low"], seed=self.seed_generator)
        features = self.roi_features(images, rois, training=training)
        out = two_stage.fast_rcnn_loss(self.cls_score(features), self.bbox_pred(features),
                                       labels, targets, box_weight=0.0)
        return {"loss": out["cls_loss"]}


@keras.saving.register_keras_serializable(package="cnn_apps")
class RCNN(ProposalSVMModel):
    """R-CNN (module doc).

    Args:
        num_classes: C. backbone, backbone_args: the CNN. settings: the ``rcnn:`` section.
        backbone_weights: ``weights`` at construction (not saved). seed: RoI sampling seed.
        score_mode: "softmax" or "svm" (set by the SVM stage).
    """

    def __init__(self, num_classes, backbone, backbone_args=None, settings=None,
                 backbone_weights=None, seed=0, score_mode="softmax", **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.backbone_name, self.backbone_args = str(backbone), dict(backbone_args or {})
        self.settings = globals()["settings"]({"rcnn": settings or {}})
        self.seed = int(seed)
        s = self.settings
        warp = s["warp_size"]
        self.warp = RoIAlign2D(pool_size=warp, sampling_ratio=1, name="warp")
        inputs, features = backbone_features(
            {"backbone": self.backbone_name, "backbone_args": self.backbone_args,
             "weights": backbone_weights}, (warp, warp, 3),
            levels=lambda names: [s["level"] or names[-1]])  # default: the deepest
        x = next(iter(features.values()))
        x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
        x = keras.layers.Dense(s["fc_units"], activation="relu", name="fc")(x)
        x = keras.layers.Dropout(float(s["dropout"]), name="fc_dropout")(x)
        self.cnn = keras.Model(inputs, x, name="cnn")
        self._init_predictors(self.num_classes, score_mode, s["fc_units"])
        self._init_trackers(self.seed)
        self.built = True

    def roi_features(self, images, rois, training=False):
        """Warp every roi of every image and run the CNN → (B, R, fc_units)."""
        warp = self.settings["warp_size"]
        images = ops.cast(images, "float32")
        rois = dilate_boxes(ops.cast(rois, "float32"), float(self.settings["context_fraction"]))

        def one_batch(pair):
            crops = self.warp([pair[0], pair[1]])  # (b, R, w, w, 3)
            shape = ops.shape(crops)
            flat = ops.reshape(crops, (-1, warp, warp, 3))
            out = self.cnn(flat, training=training)
            return ops.reshape(out, (shape[0], shape[1], -1))

        if training:
            return one_batch((images, rois))
        # image by image: B·R warped crops at once would not fit in memory at R ~ 300
        out = ops.map(lambda pair: one_batch((pair[0][None], pair[1][None]))[0], (images, rois))
        return ops.cast(out, "float32")

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "backbone": self.backbone_name, "backbone_args": self.backbone_args,
                "settings": self.settings, "seed": self.seed, "score_mode": self.score_mode}


# -- the SVM stage --------------------------------------------------------------------------
def _region_features(model, images, boxes, batch_size):
    """``model.roi_features`` in inference mode over batches of images → numpy (N, R, d)."""
    import tensorflow as tf

    fn = tf.function(lambda x, r: model.roi_features(x, r, training=False))
    out = [np.asarray(fn(tf.constant(np.asarray(images[i:i + batch_size], np.float32)),
                         tf.constant(np.asarray(boxes[i:i + batch_size], np.float32))))
           for i in range(0, len(images), batch_size)]
    return np.concatenate(out)


def finalize_svm_stage(model, config, task, run_dir, section_name):
    """Stage 3 of R-CNN / SPP-net (module doc): fit the SVMs and box regressors on the
    training split, write them into ``cls_score`` / ``bbox_pred``, set ``score_mode="svm"``
    and save the model over ``run_dir / "best.keras"`` atomically. Also writes
    ``svm_stage.json`` (counts and the feature scale)."""
    from cnn_apps.applications.detection.svm_stage import (fit_box_regressors, fit_class_svms,
                                                          same_image_overlaps)
    from cnn_apps.utils.io import atomic_path, atomic_write_json

    s = model.settings
    if not s["use_svm"]:
        return model
    data = task.data(config)
    proposals = task.proposals(config, "train")
    count = len(data.x_train) if not s["svm_images"] else min(int(s["svm_images"]),
                                                               len(data.x_train))
    images, gt = data.x_train[:count], data.gt_train[:count]
    top = proposals[:count, :s["svm_proposals_per_image"]]
    gt_valid = gt[..., 4] >= 0
    boxes = np.concatenate([np.where(gt_valid[..., None], gt[..., :4], 0.0), top], axis=1)
    features = _region_features(model, images, boxes.astype(np.float32),
                                max(1, int(config.get("batch_size", 8)) // 2))
    num_gt = gt.shape[1]
    gt_features = features[:, :num_gt][gt_valid]
    gt_classes = gt[..., 4][gt_valid].astype(int)
    gt_boxes = gt[..., :4][gt_valid]
    gt_image = np.nonzero(gt_valid)[0]
    prop_valid = np.any(top != 0, axis=-1) & (top[..., 2] > top[..., 0]) & \
        (top[..., 3] > top[..., 1])
    prop_features = features[:, num_gt:][prop_valid]
    prop_boxes = top[prop_valid]
    prop_image = np.nonzero(prop_valid)[0]
    c = model.num_classes
    max_iou = same_image_overlaps(prop_boxes, prop_image, gt_boxes, gt_classes, gt_image, c)[0]
    norms = np.linalg.norm(np.concatenate([gt_features, prop_features]), axis=1)
    scale = s["feature_norm"] / max(float(norms.mean()), 1e-8)
    weights, biases = fit_class_svms(gt_features * scale, gt_classes, prop_features * scale,
                                     max_iou, c, s, seed=int(config.get("seed", 0)))
    kernel = np.zeros((features.shape[-1], c + 1), np.float32)
    bias = np.zeros(c + 1, np.float32)
    kernel[:, 1:], bias[1:] = weights * scale, biases
    model.cls_score.set_weights([kernel, bias])
    reg_w, reg_b = fit_box_regressors(prop_features, prop_boxes, gt_boxes, gt_classes,
                                      prop_image, gt_image, c, s, two_stage.ROI_VARIANCES)
    model.bbox_pred.set_weights([reg_w.astype(np.float32), reg_b.astype(np.float32)])
    model.score_mode = "svm"
    model.predict_function = None  # a traced predict step would keep the softmax scores
    run_dir = os.fspath(run_dir)
    with atomic_path(os.path.join(run_dir, "best.keras")) as tmp:
        model.save(tmp)
    atomic_write_json(os.path.join(run_dir, "svm_stage.json"), {
        "detector": section_name, "images": int(count), "positives": int(len(gt_features)),
        "proposals": int(len(prop_features)), "feature_dim": int(features.shape[-1]),
        "feature_scale": float(scale)})
    return model


# -- Detector plumbing ----------------------------------------------------------------------
def build_model(config, num_classes):
    return RCNN(num_classes, config["backbone"], backbone_args_of(config),
                dict(config.get("rcnn") or {}), backbone_weights=config.get("weights"),
                seed=int(config.get("seed", 0)), name=f"rcnn_{config['backbone']}")


def info(config, num_classes, model, name="rcnn"):
    s = model.settings
    return {"name": name, "num_classes": int(num_classes),
            "box_voting": s["box_voting"], "voting_iou": s["voting_iou"],
            "raw_layout": "(B, R, 4C + C): class-specific boxes, then class scores "
                          "(sigmoid of the SVM scores after the SVM stage)"}


def compile_model(model, config, learning_rate, info):
    from cnn_apps.training.fit import make_optimizer

    model.compile(optimizer=make_optimizer({**config, "learning_rate": learning_rate}),
                  jit_compile=False)


def no_keras_loss(config, info):
    return None  # the fine-tuning loss lives in ProposalSVMModel.detection_losses


def finalize(model, config, task, run_dir):
    return finalize_svm_stage(model, config, task, run_dir, "rcnn")


DETECTOR = Detector("rcnn", "R-CNN: selective search, warped regions, CNN features, "
                    "per-class linear SVMs + box regression (multi-stage)",
                    build_model, info, no_keras_loss, two_stage.postprocess,
                    _compile=compile_model, _finalize=finalize, needs_proposals=True,
                    supports_jit=False)
