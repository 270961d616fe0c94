"""Faster R-CNN (Ren et al. 2015; survey S0 §5.2, SEED_CHECKLIST §14.2): a region proposal
network and a RoIAlign box head on shared features, trained jointly.

Features: the backbone's ``levels`` (default P2..P5) merged by an FPN neck
(``cnn_apps.backbones.FeaturePyramid``) when more than one level is used, or the single map.

Region proposal network (shared over levels): a 3×3 conv + ReLU, then per anchor one
objectness logit (sigmoid) and 4 deltas (``encode_boxes`` coding, variances
``RPN_VARIANCES``). Anchors (``cnn_apps.ops.generate_anchors``): at each cell of level l,
``anchor_scales[l]`` sides (fractions of the image) × ``anchor_ratios`` (width/height).
Training targets: ``cnn_apps.ops.match_anchors`` with IoU >= ``rpn_positive_iou`` positive,
< ``rpn_negative_iou`` negative, and every object claiming its best anchor; ``rpn_batch``
anchors per image are sampled with at most ``rpn_positive_fraction`` positives (1:1 in the
paper; negatives fill up). Boundary-crossing anchors are kept (the paper ignores them; at the
small image sizes used here they would remove most large anchors)::

    L_rpn = (1/N_s) Σ_{sampled} BCE(σ(o_a), [a positive])
            + λ_rpn (1/N_s) Σ_{sampled positives} smoothL1(d_a − t_a)

Proposals (in the graph, no gradient): decode all anchors, clip to the image, keep the
``pre_nms_topk`` highest objectness, drop boxes thinner than ``min_proposal_size``, NMS at
``proposal_nms_iou`` → ``train_proposals`` (training) or ``test_proposals`` (inference) rows,
zero-padded.

Box head: ``two_stage.sample_roi_targets`` (training only; gt boxes appended), RoIAlign
(``cnn_apps.layers.RoIAlign2D``) with the FPN level rule of Lin et al.: a RoI of side
``s = √(hw)`` (fraction of the image) is pooled from level
``clip(⌊k0 + log2(s / roi_canonical_scale)⌋, first, last)`` with k0 = ``roi_canonical_level``
(each RoI keeps its own level's RoIAlign result), then
``two_stage.build_box_head`` and ``two_stage.fast_rcnn_loss`` (optionally OHEM). Total loss
= L_rpn + L_fast_rcnn.

Inference: ``model(images)["raw"]`` → the two-stage raw layout (``two_stage`` module doc) over
the ``test_proposals`` RoIs; ``postprocess`` = class-aware NMS (+ optional box voting).

Example::

    model = build_model(config, num_classes=4)          # a FasterRCNN keras.Model
    compile_model(model, config, 1e-3, info)
    model.fit(images, {"raw": gt})
    out = postprocess(model(images)["raw"], info)
"""

from __future__ import annotations

import keras
from keras import ops

from cnn_apps.applications.detection import two_stage
from cnn_apps.applications.detection.common import backbone_features, pick_level, smooth_l1
from cnn_apps.applications.detection.detectors import Detector
from cnn_apps.backbones.necks import FeaturePyramid
from cnn_apps.errors import ConfigError
from cnn_apps.layers.roi import RoIAlign2D
from cnn_apps.ops import decode_boxes, encode_boxes, generate_anchors, match_anchors

RPN_VARIANCES = (0.1, 0.1, 0.2, 0.2)

_DEFAULTS = {"levels": ["P2", "P3", "P4", "P5"], "fpn_channels": 64,
             "anchor_scales": [[0.055, 0.08], [0.11, 0.16], [0.22, 0.32], [0.44, 0.64]],
             "anchor_ratios": [0.5, 1.0, 2.0], "rpn_channels": 64,
             "rpn_positive_iou": 0.7, "rpn_negative_iou": 0.3, "rpn_batch": 256,
             "rpn_positive_fraction": 0.5, "rpn_box_weight": 1.0, "pre_nms_topk": 1000,
             "proposal_nms_iou": 0.7, "train_proposals": 256, "test_proposals": 100,
             "min_proposal_size": 0.01, "roi_pool_size": 7, "sampling_ratio": 2,
             "roi_canonical_scale": 0.25, "roi_canonical_level": "P4"}


def section_settings(config):
    """The ``faster_rcnn:`` section with defaults, checked (ConfigError names the key)."""
    section = dict(config.get("faster_rcnn") or {})
    values = {**_DEFAULTS, **{k: v for k, v in section.items() if k in _DEFAULTS}}
    values.update(two_stage.head_settings(section, "faster_rcnn"))
    values["levels"] = [str(v) for v in values["levels"]]
    if not values["levels"]:
        raise ConfigError("faster_rcnn.levels must name at least one backbone level")
    scales = values["anchor_scales"]
    if scales and not isinstance(scales[0], (list, tuple)):
        scales = [scales] * len(values["levels"])
    if len(scales) != len(values["levels"]):
        raise ConfigError(f"faster_rcnn.anchor_scales needs one list per level "
                          f"({len(values['levels'])}), got {len(scales)}")
    values["anchor_scales"] = [[float(s) for s in level] for level in scales]
    values["anchor_ratios"] = [float(r) for r in values["anchor_ratios"]]
    for key in ("rpn_batch", "train_proposals", "test_proposals", "pre_nms_topk",
                "roi_pool_size", "sampling_ratio", "fpn_channels", "rpn_channels",
                "batch_rois"):
        values[key] = int(values[key])
        if values[key] < 1:
            raise ConfigError(f"faster_rcnn.{key} must be >= 1, got {values[key]}")
    for key in ("rpn_positive_iou", "rpn_negative_iou", "proposal_nms_iou",
                "rpn_positive_fraction", "roi_canonical_scale", "min_proposal_size",
                "rpn_box_weight"):
        values[key] = float(values[key])
    if not 0 < values["rpn_negative_iou"] <= values["rpn_positive_iou"] <= 1:
        raise ConfigError("faster_rcnn: need 0 < rpn_negative_iou <= rpn_positive_iou <= 1")
    if values["roi_canonical_level"] not in values["levels"]:
        raise ConfigError(f"faster_rcnn.roi_canonical_level "
                          f"'{values['roi_canonical_level']}' is not among levels "
                          f"{values['levels']}")
    return values


def _level_number(name):
    return int(str(name)[1:])


def generate_proposals(rpn_logits, rpn_deltas, anchors, pre_nms_topk, max_proposals,
                       nms_iou=0.7, min_size=0.0):
    """RPN outputs (B, A), (B, A, 4) + anchors (A, 4) → (B, max_proposals, 4) normalized
    proposals after NMS, best first, zero rows = padding (no gradient)."""
    import tensorflow as tf

    logits = tf.stop_gradient(tf.cast(rpn_logits, tf.float32))
    deltas = tf.stop_gradient(tf.cast(rpn_deltas, tf.float32))
    anchors = tf.convert_to_tensor(anchors, tf.float32)
    k = min(int(pre_nms_topk), int(anchors.shape[0]))
    scores, index = tf.math.top_k(tf.sigmoid(logits), k=k)
    boxes = decode_boxes(tf.gather(deltas, index, batch_dims=1), tf.gather(anchors, index),
                         RPN_VARIANCES)
    boxes = tf.clip_by_value(boxes, 0.0, 1.0)
    big = tf.logical_and(boxes[..., 2] - boxes[..., 0] >= min_size,
                         boxes[..., 3] - boxes[..., 1] >= min_size)
    scores = tf.where(big, scores, -1.0)
    out = tf.image.combined_non_max_suppression(
        boxes[:, :, None, :], scores[..., None], int(max_proposals), int(max_proposals),
        iou_threshold=float(nms_iou), score_threshold=-0.5, clip_boxes=False)
    return tf.stop_gradient(out.nmsed_boxes)


def rpn_losses(rpn_logits, rpn_deltas, gt, anchors, s, seed=None):
    """RPN objectness + box losses (module doc), averaged over the batch."""
    import tensorflow as tf

    gt = tf.cast(gt, tf.float32)
    anchors = tf.convert_to_tensor(anchors, tf.float32)
    gt_boxes, gt_valid = gt[..., :4], gt[..., 4] >= 0

    matched = match_anchors(gt_boxes, anchors, s["rpn_positive_iou"], s["rpn_negative_iou"],
                            force_best_anchor=True, gt_valid=gt_valid)  # (B, A)
    positive, negative = matched >= 0, matched == -1
    uniform = keras.random.uniform(tf.shape(matched), seed=seed)
    keys = two_stage.sampling_keys(positive, negative, uniform, s["rpn_batch"],
                                   s["rpn_positive_fraction"])
    k = min(s["rpn_batch"], int(anchors.shape[0]))
    kth = tf.math.top_k(keys, k=k).values[:, -1:]
    sampled = tf.logical_and(keys >= kth, keys >= 0.0)
    sampled_f = tf.cast(sampled, tf.float32)
    count = tf.maximum(tf.reduce_sum(sampled_f, axis=1), 1.0)
    logits = tf.cast(rpn_logits, tf.float32)
    bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.cast(positive, tf.float32),
                                                  logits=logits)
    cls = tf.reduce_sum(bce * sampled_f, axis=1) / count
    target_boxes = tf.gather(gt_boxes, tf.maximum(matched, 0), batch_dims=1)
    target_boxes = tf.where(positive[..., None], target_boxes, anchors[None])
    targets = tf.stop_gradient(encode_boxes(target_boxes, anchors[None], RPN_VARIANCES))
    loc = tf.reduce_sum(smooth_l1(tf.cast(rpn_deltas, tf.float32) - targets), axis=-1)
    box = tf.reduce_sum(loc * sampled_f * tf.cast(positive, tf.float32), axis=1) / count
    return tf.reduce_mean(cls), tf.reduce_mean(box)


def build_feature_net(config, s):
    """images → ``{level: map, ..., "rpn_logits": (B, A), "rpn_deltas": (B, A, 4)}``."""
    size = int(config["image_size"])
    inputs, features = backbone_features(config, (size, size, 3), levels=s["levels"])
    maps = {lvl: pick_level(features, lvl, config["backbone"]) for lvl in s["levels"]}
    if len(maps) > 1:
        maps = FeaturePyramid(s["fpn_channels"], name="fpn")(maps)
    per_location = len(s["anchor_scales"][0]) * len(s["anchor_ratios"])
    if any(len(level) * len(s["anchor_ratios"]) != per_location for level in s["anchor_scales"]):
        raise ConfigError("faster_rcnn.anchor_scales: every level needs the same number of "
                          "scales (the RPN head is shared)")
    conv = keras.layers.Conv2D(s["rpn_channels"], 3, padding="same", activation="relu",
                               name="rpn_conv")
    objectness = keras.layers.Conv2D(
        per_location, 1, name="rpn_objectness",
        kernel_initializer=keras.initializers.RandomNormal(0.0, 0.01))
    regression = keras.layers.Conv2D(
        4 * per_location, 1, name="rpn_deltas",
        kernel_initializer=keras.initializers.RandomNormal(0.0, 0.01))
    logits, deltas = [], []
    for lvl in s["levels"]:
        hidden = conv(maps[lvl])
        logits.append(keras.layers.Reshape((-1,), name=f"rpn_logits_{lvl}")(objectness(hidden)))
        deltas.append(keras.layers.Reshape((-1, 4), name=f"rpn_deltas_{lvl}")(
            regression(hidden)))
    if len(logits) > 1:
        logits = keras.layers.Concatenate(axis=1, name="rpn_logits")(logits)
        deltas = keras.layers.Concatenate(axis=1, name="rpn_box_deltas")(deltas)
    else:
        logits, deltas = logits[0], deltas[0]
    outputs = {**{lvl: maps[lvl] for lvl in s["levels"]}, "rpn_logits": logits,
               "rpn_deltas": deltas}
    return keras.Model(inputs, outputs, name="features")


@keras.saving.register_keras_serializable(package="cnn_apps")
class FasterRCNN(two_stage.TwoStageModel):
    """Faster R-CNN (module doc) on any registered backbone with pyramid levels.

    Args:
        num_classes: C object classes. image_size: square input side (raw 0..255 pixels).
        backbone, backbone_args: the backbone name and its builder arguments.
        settings: the ``faster_rcnn:`` config section (defaults filled in by ``settings``).
        backbone_weights: ``weights`` for the backbone at construction (not saved; a
            reloaded model takes its weights from the file).
        seed: of the anchor/RoI sampling.

    ``call(images)`` → ``{"raw": (B, test_proposals, 5C)}``; ``fit`` on ``(images,
    {"raw": gt})`` logs ``loss``, ``rpn_cls_loss``, ``rpn_box_loss``, ``cls_loss``,
    ``box_loss``.
    """

    loss_names = ("loss", "rpn_cls_loss", "rpn_box_loss", "cls_loss", "box_loss")

    def __init__(self, num_classes, image_size, backbone, backbone_args=None, settings=None,
                 backbone_weights=None, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.image_size = int(num_classes), int(image_size)
        self.backbone_name, self.backbone_args = str(backbone), dict(backbone_args or {})
        self.settings = section_settings({"faster_rcnn": settings or {}})
        self.seed = int(seed)
        s = self.settings
        config = {"backbone": self.backbone_name, "backbone_args": self.backbone_args,
                  "image_size": self.image_size, "weights": backbone_weights}
        self.feature_net = build_feature_net(config, s)
        outputs = self.feature_net.output
        sizes = [tuple(int(d) for d in outputs[lvl].shape[1:3]) for lvl in s["levels"]]
        self.anchors = generate_anchors(sizes, image_size=1.0, scales=s["anchor_scales"],
                                        aspect_ratios=s["anchor_ratios"])
        self.level_numbers = [_level_number(lvl) for lvl in s["levels"]]
        channels = int(outputs[s["levels"][0]].shape[-1])
        self.roi_align = RoIAlign2D(s["roi_pool_size"], s["sampling_ratio"], name="roi_align")
        self.roi_align.build([(None, None, None, channels), (None, None, 4)])
        self.box_head = build_box_head_for(s, channels, self.num_classes)
        self._init_trackers(self.seed)
        self.built = True

    # -- pieces -----------------------------------------------------------------------------
    def pool(self, features, rois):
        """RoIAlign of each RoI on its FPN level (module doc) → (B, R, ph, pw, channels).
        Every level aligns all RoIs with ``RoIAlign2D.pool_dense`` (two matmuls over the
        small level maps, cheaper than per-RoI gathers) and each RoI keeps its own level's
        result."""
        s = self.settings
        levels = s["levels"]
        if len(levels) == 1:
            return self.roi_align.pool_dense(features[levels[0]], rois)
        side = ops.sqrt(ops.maximum((rois[..., 2] - rois[..., 0]) * (rois[..., 3] - rois[..., 1]),
                                    1e-12))
        k0 = _level_number(s["roi_canonical_level"])
        target = ops.floor(k0 + ops.log2(side / s["roi_canonical_scale"]))
        target = ops.clip(target, min(self.level_numbers), max(self.level_numbers))
        pooled = 0.0
        for lvl, number in zip(levels, self.level_numbers):
            here = ops.cast(ops.equal(target, float(number)), features[lvl].dtype)
            pooled = pooled + (self.roi_align.pool_dense(features[lvl], rois)
                               * here[:, :, None, None, None])
        return pooled

    def proposals(self, features, training):
        s = self.settings
        count = s["train_proposals"] if training else s["test_proposals"]
        return generate_proposals(features["rpn_logits"], features["rpn_deltas"], self.anchors,
                                  s["pre_nms_topk"], count, s["proposal_nms_iou"],
                                  s["min_proposal_size"])

    def call(self, inputs, training=False):
        images = inputs["images"] if isinstance(inputs, dict) else inputs
        features = self.feature_net(images, training=training)
        rois = self.proposals(features, training=False)
        head = self.box_head(self.pool(features, rois), training=training)
        return {"raw": two_stage.roi_raw_outputs(head["class_logits"], head["box_deltas"],
                                                 rois)}

    def detection_losses(self, inputs, gt, training):
        s = self.settings
        images = inputs["images"] if isinstance(inputs, dict) else inputs
        features = self.feature_net(images, training=training)
        rpn_cls, rpn_box = rpn_losses(features["rpn_logits"], features["rpn_deltas"], gt,
                                      self.anchors, s, seed=self.seed_generator)
        proposals = self.proposals(features, training=True)
        rois, labels, targets = sample_for(s, proposals, gt, self.num_classes,
                                           self.seed_generator)
        head = self.box_head(self.pool(features, rois), training=training)
        frcnn = two_stage.fast_rcnn_loss(head["class_logits"], head["box_deltas"], labels,
                                         targets, s["box_weight"],
                                         s["ohem_batch"] if s["ohem"] else None, rois,
                                         s["ohem_nms_iou"])
        head_loss = frcnn["loss"] if training else frcnn["balanced"]
        total = rpn_cls + s["rpn_box_weight"] * rpn_box + head_loss
        return {"loss": total, "rpn_cls_loss": rpn_cls, "rpn_box_loss": rpn_box,
                "cls_loss": frcnn["cls_loss"], "box_loss": frcnn["box_loss"]}

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "image_size": self.image_size, "backbone": self.backbone_name,
                "backbone_args": two_stage.plain(self.backbone_args),
                "settings": two_stage.plain(self.settings), "seed": self.seed}


def build_box_head_for(s, channels, num_classes):
    return two_stage.build_box_head(s["roi_pool_size"], channels, num_classes, s["head_units"])


def sample_for(s, proposals, gt, num_classes, seed):
    """``sample_roi_targets`` with the section's settings; with OHEM every candidate RoI is
    kept (no fg/bg ratio) and ``fast_rcnn_loss`` picks the hardest."""
    if s["ohem"]:
        total = int(proposals.shape[1]) + int(gt.shape[1])
        return two_stage.sample_roi_targets(proposals, gt, num_classes, total, 1.0,
                                            s["fg_iou"], s["bg_iou_high"], s["bg_iou_low"],
                                            seed=seed)
    return two_stage.sample_roi_targets(proposals, gt, num_classes, s["batch_rois"],
                                        s["positive_fraction"], s["fg_iou"], s["bg_iou_high"],
                                        s["bg_iou_low"], seed=seed)


# -- Detector plumbing ----------------------------------------------------------------------
def build_model(config, num_classes):
    weights = config.get("weights")
    return FasterRCNN(num_classes, int(config["image_size"]), config["backbone"],
                      two_stage.backbone_args(config), dict(config.get("faster_rcnn") or {}),
                      backbone_weights=weights, seed=int(config.get("seed", 0)),
                      name=f"faster_rcnn_{config['backbone']}")


def info(config, num_classes, model):
    s = section_settings(config)
    return {"name": "faster_rcnn", "num_classes": int(num_classes),
            "num_rois": s["test_proposals"], "box_voting": s["box_voting"],
            "voting_iou": s["voting_iou"],
            "raw_layout": "(B, R, 4C + C): class-specific boxes, then class probabilities"}


def compile_model(model, config, learning_rate, info):
    from cnn_apps.training.fit import make_optimizer

    model.compile(optimizer=make_optimizer({**config, "learning_rate": learning_rate}),
                  jit_compile=False)


def _no_keras_loss(config, info):
    return None  # the loss lives in FasterRCNN.train_step


DETECTOR = Detector("faster_rcnn", "Faster R-CNN: RPN + RoIAlign box head (FPN), joint training",
                    build_model, info, _no_keras_loss, two_stage.postprocess,
                    _compile=compile_model, supports_jit=False)
