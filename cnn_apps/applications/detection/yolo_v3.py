"""YOLOv3: multi-scale anchor-based one-stage detector (Redmon & Farhadi 2018; survey S0 §5.2).

Three scales (backbone levels ``yolo_v3.levels``: by default P2, P3, P4 = strides 4, 8, 16,
the paper's strides halved for small objects on small images; merged top-down: the coarser
map is upsampled and concatenated with the finer one) × 3 anchors each. Every predictor
outputs ``(t_x, t_y, t_w, t_h, t_o, class logits)``; the box is::

    cx = (j + σ(t_x)) / G,   cy = (i + σ(t_y)) / G,   w = a_w · exp(t_w),   h = a_h · exp(t_h)

(G = the scale's grid size, anchors ``(a_h, a_w)`` normalized), objectness σ(t_o) and
independent per-class sigmoids (multi-label). A ground-truth box is assigned to the one
predictor — of the 9 anchors, the one whose shape (centred, size only) has the highest IoU
with it, at the cell of its scale containing the box centre (the first object wins a
predictor claimed twice). With ``assign_iou`` < 1 (config ``yolo_v3.assign_iou``; the paper
is 1) the object also claims, after all best-anchor claims, every anchor whose shape IoU
with it reaches ``assign_iou``, at that anchor's scale and cell (multi-anchor assignment as
in YOLOv4's ``iou_thresh``): with the default log-spaced anchors 1.28× apart, 0.5 gives an
object 2-4 predictors, which lifted AP50 on ``shapes`` from 0.735 to 0.908. Loss per image::

    λ_box Σ_assigned (2 − w·h)·[(σ(t_x) − x̂)² + (σ(t_y) − ŷ)²
                          + (t_w − log(w/a_w))² + (t_h − log(h/a_h))²]
    + Σ_assigned BCE(σ(t_o), 1) + Σ_{unassigned, max IoU(pred, gt) < ignore_iou} BCE(σ(t_o), 0)
    + Σ_assigned Σ_c BCE(σ(t_c), 1[c = class])

(predictors that are unassigned but overlap a ground truth by ``ignore_iou`` = 0.5 or more
get no objectness loss). λ_box = 1 in the paper (the default); ``yolo_v3.box_weight`` can
raise it, as YOLO v1's λ_coord = 5 does, so that the few assigned box terms weigh more
against the objectness sum over thousands of predictors. Scores at test time: σ(t_o)·σ(t_c), then class-aware NMS.

The model returns one raw tensor (N, A, 5 + C): the scales flattened (finest first; cells
row-major, then the scale's 3 anchors) and concatenated.

Example::

    model = build_model(config, num_classes=4)           # {"raw": (N, A, 5 + C)}
    loss = YoloV3Loss(grid_sizes=[16, 8, 4], anchors=ANCHORS, num_classes=4)
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from cnn_apps.applications.detection.common import (backbone_features, bce_with_logits,
                                                    conv_bn_relu, first_claims, nms_outputs,
                                                    pick_level)
from cnn_apps.ops import box_iou

#: default anchors (height, width) as fractions of the image, 3 per scale, fine to coarse:
#: squares at the centres of 9 equal log-size bins over 0.055-0.5 (the ``shapes`` objects'
#: sizes are log-uniform there and their aspect ratios stay within 0.6-1.7, so sizes matter
#: more than shapes for the best-anchor assignment)
ANCHORS = [[[0.062, 0.062], [0.08, 0.08], [0.102, 0.102]],
           [[0.131, 0.131], [0.167, 0.167], [0.214, 0.214]],
           [[0.273, 0.273], [0.349, 0.349], [0.446, 0.446]]]
MAX_LOG_SCALE = 4.0  # exp(4) ≈ 55×: keeps decoded sizes finite for wild outputs


def v3_settings(config):
    cfg = dict(config.get("yolo_v3") or {})
    anchors = cfg.get("anchors") or ANCHORS
    arr = np.asarray(anchors, np.float64)
    if arr.shape != (3, 3, 2) or arr.min() <= 0:
        raise ValueError(f"yolo_v3.anchors must be 3 scales × 3 positive (height, width) "
                         f"pairs; got {anchors}.")
    prior = float(cfg.get("prior", 0.01))
    if not 0.0 < prior < 1.0:
        raise ValueError(f"yolo_v3.prior must be in (0, 1); got {prior}.")
    return {"levels": list(cfg.get("levels") or ["P2", "P3", "P4"]),
            "head_channels": int(cfg.get("head_channels", 64)),
            "anchors": arr.tolist(), "ignore_iou": float(cfg.get("ignore_iou", 0.5)),
            "box_weight": float(cfg.get("box_weight", 1.0)),
            "assign_iou": float(cfg.get("assign_iou", 1.0)),
            "prior": prior}


def build_model(config, num_classes):
    """Raw-pixel images → ``{"raw": (N, A, 5 + num_classes)}``."""
    s = v3_settings(config)
    if len(s["levels"]) != 3:
        raise ValueError(f"yolo_v3.levels must name 3 backbone levels; got {s['levels']}.")
    size = int(config["image_size"])
    inputs, features = backbone_features(config, (size, size, 3), levels=s["levels"])
    maps = [pick_level(features, level, config["backbone"]) for level in s["levels"]]
    width, depth = s["head_channels"], 5 + num_classes
    x = conv_bn_relu(maps[2], width, 1, 1, "v3_lateral2")
    merged = [None, None, x]
    for i in (1, 0):  # top-down: upsample the coarser merged map, concatenate the finer one
        factor = int(maps[i].shape[1]) // int(x.shape[1])
        up = keras.layers.UpSampling2D(factor, name=f"v3_up{i}")(x)
        x = keras.layers.Concatenate(name=f"v3_concat{i}")([maps[i], up])
        x = conv_bn_relu(x, width, 1, 1, f"v3_lateral{i}")
        merged[i] = x
    outputs = []
    for i, fmap in enumerate(merged):
        fmap = conv_bn_relu(fmap, width, 3, 1, f"v3_head{i}")
        out = keras.layers.Conv2D(3 * depth, 1, name=f"v3_out{i}",
                                  bias_initializer=keras.initializers.Constant(
                                      output_bias(num_classes, s["prior"])))(fmap)
        outputs.append(keras.layers.Reshape((-1, depth), name=f"v3_flat{i}")(out))
    raw = keras.layers.Concatenate(axis=1, name="raw", dtype="float32")(outputs)
    return keras.Model(inputs, {"raw": raw}, name=f"yolo_v3_{config['backbone']}")


def output_bias(num_classes, prior):
    """Initial output-layer biases (3 anchors × ``(t_x, t_y, t_w, t_h, t_o, classes)``): 0 for
    the box, ``−log((1 − π)/π)`` for objectness and classes, so every predictor starts at
    σ = π (the prior-probability initialization of Lin et al. 2017). With π ≈ 0.01 the
    thousands of background predictors do not start at a loss of ln 2 each, whose gradient
    would otherwise dominate the first epochs."""
    bias = np.zeros((3, 5 + int(num_classes)), np.float32)
    bias[:, 4:] = -np.log((1.0 - prior) / prior)
    return bias.reshape(-1)


def info(config, num_classes, model):
    sizes = []
    for i in range(3):
        shape = model.get_layer(f"v3_out{i}").output.shape
        if int(shape[1]) != int(shape[2]):
            raise ValueError(f"YOLOv3 needs square grids; got {shape[1]}x{shape[2]}.")
        sizes.append(int(shape[1]))
    return {"name": "yolo_v3", "grid_sizes": sizes, "anchors": v3_settings(config)["anchors"]}


def predictor_table(grid_sizes, anchors):
    """Per raw row: ``(cell_y, cell_x, grid, anchor_h, anchor_w)`` float32 (A, 5)."""
    rows = []
    for g, level in zip(grid_sizes, anchors):
        i, j, k = np.meshgrid(np.arange(g), np.arange(g), np.arange(3), indexing="ij")
        a = np.asarray(level, np.float64)[k.reshape(-1)]
        rows.append(np.stack([i.reshape(-1), j.reshape(-1), np.full(i.size, g),
                              a[:, 0], a[:, 1]], axis=1))
    return np.concatenate(rows).astype(np.float32)


def _decode_boxes(raw, table):
    cy = (table[:, 0] + ops.sigmoid(raw[..., 1])) / table[:, 2]
    cx = (table[:, 1] + ops.sigmoid(raw[..., 0])) / table[:, 2]
    h = table[:, 3] * ops.exp(ops.minimum(raw[..., 3], MAX_LOG_SCALE))
    w = table[:, 4] * ops.exp(ops.minimum(raw[..., 2], MAX_LOG_SCALE))
    return ops.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], axis=-1)


@keras.saving.register_keras_serializable(package="cnn_apps")
class YoloV3Loss(keras.losses.Loss):
    """YOLOv3 loss (module doc) for ``y_true`` = padded gt (N, M, 5) and ``y_pred`` = raw
    (N, A, 5 + C). Returns one value per image."""

    def __init__(self, grid_sizes, anchors=ANCHORS, num_classes=1, ignore_iou=0.5,
                 box_weight=1.0, assign_iou=1.0, name="yolo_v3_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        if len(grid_sizes) != 3 or min(int(g) for g in grid_sizes) < 1:
            raise ValueError(f"`grid_sizes` must be 3 positive grid sizes; got {grid_sizes}.")
        if int(num_classes) < 1:
            raise ValueError(f"`num_classes` must be >= 1; got {num_classes}.")
        self.grid_sizes = [int(g) for g in grid_sizes]
        self.anchors = np.asarray(anchors, np.float64).tolist()
        self.num_classes, self.ignore_iou = int(num_classes), float(ignore_iou)
        if float(box_weight) < 0:
            raise ValueError(f"`box_weight` must be >= 0; got {box_weight}.")
        self.box_weight = float(box_weight)
        if not 0.0 < float(assign_iou) <= 1.0:
            raise ValueError(f"`assign_iou` must be in (0, 1]; got {assign_iou}.")
        self.assign_iou = float(assign_iou)
        self.table = predictor_table(self.grid_sizes, self.anchors)

    def call(self, y_true, y_pred):
        y_true, raw = ops.cast(y_true, "float32"), ops.cast(y_pred, "float32")
        table = ops.convert_to_tensor(self.table)
        gt, cls = y_true[..., :4], y_true[..., 4]
        valid = cls >= 0
        h, w = gt[..., 2] - gt[..., 0], gt[..., 3] - gt[..., 1]
        cy, cx = (gt[..., 0] + gt[..., 2]) / 2, (gt[..., 1] + gt[..., 3]) / 2
        flat = np.asarray(self.anchors, np.float32).reshape(9, 2)
        inter = (ops.minimum(h[..., None], flat[:, 0]) * ops.minimum(w[..., None], flat[:, 1]))
        shape_iou = inter / (h[..., None] * w[..., None] + flat[:, 0] * flat[:, 1] - inter)
        best = ops.cast(ops.argmax(shape_iou, axis=-1), "int32")  # (N, M) in 0..8
        gt_rows = ops.concatenate(
            [gt, ops.one_hot(ops.cast(ops.maximum(cls, 0), "int32"), self.num_classes)], axis=-1)
        # claims: every object's best anchor first; with assign_iou < 1 then also every anchor
        # whose shape IoU reaches assign_iou (object-major, 9 per object). A predictor claimed
        # twice goes to its first claim, so best-anchor claims win over extra ones.
        anchor, claim_ok, claim_rows = best, valid, gt_rows
        claim_cy, claim_cx = cy, cx
        if self.assign_iou < 1.0:
            n = ops.shape(best)[0]
            extra = ops.reshape(ops.broadcast_to(ops.arange(9, dtype="int32"),
                                                 ops.shape(shape_iou)), (n, -1))
            extra_ok = ops.reshape((shape_iou >= self.assign_iou) & valid[..., None], (n, -1))
            rep = lambda x: ops.repeat(x, 9, axis=1)  # noqa: E731 (object-major repeat)
            anchor = ops.concatenate([best, extra], axis=1)
            claim_ok = ops.concatenate([valid, extra_ok], axis=1)
            claim_rows = ops.concatenate([gt_rows, rep(gt_rows)], axis=1)
            claim_cy = ops.concatenate([cy, rep(cy)], axis=1)
            claim_cx = ops.concatenate([cx, rep(cx)], axis=1)
        scale, k = anchor // 3, anchor % 3
        grids = ops.convert_to_tensor(np.array(self.grid_sizes, np.int32))
        offsets = ops.convert_to_tensor(np.cumsum([0] + [3 * g * g for g in self.grid_sizes])
                                        [:3].astype(np.int32))
        g = ops.take(grids, scale)
        gf = ops.cast(g, "float32")
        row = ops.clip(ops.cast(ops.floor(claim_cy * gf), "int32"), 0, g - 1)
        col = ops.clip(ops.cast(ops.floor(claim_cx * gf), "int32"), 0, g - 1)
        index = ops.take(offsets, scale) + (row * g + col) * 3 + k
        assigned, target = first_claims(index, claim_ok, claim_rows, self.table.shape[0])
        t_box, t_cls = target[..., :4], target[..., 4:]
        t_h, t_w = t_box[..., 2] - t_box[..., 0], t_box[..., 3] - t_box[..., 1]
        t_cy, t_cx = (t_box[..., 0] + t_box[..., 2]) / 2, (t_box[..., 1] + t_box[..., 3]) / 2
        safe = assigned > 0
        t_x = t_cx * table[:, 2] - table[:, 1]
        t_y = t_cy * table[:, 2] - table[:, 0]
        t_tw = ops.log(ops.where(safe, t_w, 1.0) / table[:, 4])
        t_th = ops.log(ops.where(safe, t_h, 1.0) / table[:, 3])
        box_term = (2.0 - t_w * t_h) * (
            ops.square(ops.sigmoid(raw[..., 0]) - t_x) + ops.square(ops.sigmoid(raw[..., 1]) - t_y)
            + ops.square(raw[..., 2] - t_tw) + ops.square(raw[..., 3] - t_th))
        pred_boxes = _decode_boxes(raw, table)
        overlap = ops.where(valid[:, None, :], box_iou(pred_boxes, gt), 0.0)  # (N, A, M)
        ignore = ops.stop_gradient(ops.max(overlap, axis=-1)) >= self.ignore_iou
        no_obj = (1.0 - assigned) * (1.0 - ops.cast(ignore, "float32"))
        obj_term = (assigned * bce_with_logits(raw[..., 4], 1.0)
                    + no_obj * bce_with_logits(raw[..., 4], 0.0))
        cls_term = assigned * ops.sum(bce_with_logits(raw[..., 5:], t_cls), axis=-1)
        return ops.sum(self.box_weight * assigned * box_term + obj_term + cls_term, axis=1)

    def get_config(self):
        return {**super().get_config(), "grid_sizes": self.grid_sizes, "anchors": self.anchors,
                "num_classes": self.num_classes, "ignore_iou": self.ignore_iou,
                "box_weight": self.box_weight, "assign_iou": self.assign_iou}


def loss(config, det_info, num_classes):
    s = v3_settings(config)
    return YoloV3Loss(det_info["grid_sizes"], det_info["anchors"], num_classes,
                      s["ignore_iou"], s["box_weight"], s["assign_iou"])


def decode(raw, det_info):
    """Raw → (boxes (N, A, 4) normalized, scores σ(t_o)·σ(t_c) (N, A, C))."""
    table = ops.convert_to_tensor(predictor_table(det_info["grid_sizes"], det_info["anchors"]))
    raw = ops.cast(raw, "float32")
    boxes = ops.clip(_decode_boxes(raw, table), 0.0, 1.0)
    return boxes, ops.sigmoid(raw[..., 4:5]) * ops.sigmoid(raw[..., 5:])


def postprocess(raw, info):
    boxes, scores = decode(raw, info["detector"])
    return nms_outputs(boxes, scores, info)
