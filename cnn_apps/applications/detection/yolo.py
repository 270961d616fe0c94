"""YOLO v1: one grid regression for boxes and classes (Redmon et al. 2016; survey S0 §5.2,
SEED_CHECKLIST LS-17).

The image is divided into an S×S grid (here: the cells of one backbone feature level,
``yolo.level``, e.g. P3 = stride 8 → 16×16 at 128 px). Each cell predicts B boxes
``(x, y, √w, √h, confidence)`` and one set of C class probabilities. ``x, y`` are the box
centre's offset inside its cell and ``√w, √h`` the square roots of its size as fractions of
the image; x, y, √w, √h and the confidence pass through a sigmoid, the class scores
through a softmax (the paper uses a linear output layer and two fully connected layers; a
conv head keeps any input size and the sigmoid keeps outputs in range).

A ground-truth object belongs to the cell containing its centre (the first object of the
image wins a cell claimed twice); of the cell's B predictors the one whose box has the
highest IoU with it (first on ties) is "responsible" (1^obj_ij). The sum-squared loss per
image::

    λ_coord Σ 1^obj_ij [(x − x̂)² + (y − ŷ)²] + λ_coord Σ 1^obj_ij [(√w − √ŵ)² + (√h − √ĥ)²]
    + Σ 1^obj_ij (C − Ĉ)² + λ_noobj Σ 1^noobj_ij (C − Ĉ)² + Σ_i 1^obj_i Σ_c (p_i(c) − p̂_i(c))²

with λ_coord = 5, λ_noobj = 0.5, target confidence Ĉ = IoU(predicted box, truth) for the
responsible predictor (treated as a constant; with ``rescore=False``, Darknet's
``rescore=0``, Ĉ = 1) and 0 elsewhere; the per-image sums are
averaged over the batch. At test time the class-specific score of box j in cell i is
``Pr(class | object) · C_ij``, followed by class-aware NMS.

Example::

    model = YOLO.build_model(config, num_classes=4)          # {"raw": (N, S, S, 5B + C)}
    loss = YoloV1Loss(grid_size=8, boxes_per_cell=2, num_classes=4)
    out = YOLO.postprocess(model(images)["raw"], info)
"""

from __future__ import annotations

import keras
from keras import ops

from cnn_apps.applications.detection.common import (backbone_features, conv_bn_relu,
                                                    first_claims, nms_outputs, pick_level)
from cnn_apps.ops import box_iou


def yolo_settings(config):
    cfg = dict(config.get("yolo") or {})
    return {"level": str(cfg.get("level", "P3")),
            "boxes_per_cell": int(cfg.get("boxes_per_cell", 2)),
            "head_channels": int(cfg.get("head_channels", 128)),
            "head_layers": int(cfg.get("head_layers", 2)),
            "fuse_coarser": bool(cfg.get("fuse_coarser", True)),
            "lambda_coord": float(cfg.get("lambda_coord", 5.0)),
            "lambda_noobj": float(cfg.get("lambda_noobj", 0.5)),
            "rescore": bool(cfg.get("rescore", True))}


def build_model(config, num_classes):
    """Raw-pixel images → ``{"raw": (N, S, S, 5B + C)}``."""
    s = yolo_settings(config)
    if s["boxes_per_cell"] < 1:
        raise ValueError(f"yolo.boxes_per_cell must be >= 1; got {s['boxes_per_cell']}.")
    size = int(config["image_size"])

    def grid_and_context(names):  # the grid level, and the next coarser one when fused
        coarser = [k for k in names if k > s["level"]][:1] if s["fuse_coarser"] else []
        return [s["level"], *coarser]

    inputs, features = backbone_features(config, (size, size, 3), levels=grid_and_context)
    x = pick_level(features, s["level"], config["backbone"])
    coarser = sorted(k for k in features if k > s["level"])
    if coarser:
        # context from the next coarser map (upsampled to the grid), FPN style
        up = features[coarser[0]]
        factor = int(x.shape[1]) // int(up.shape[1])
        if factor > 1 and int(up.shape[1]) * factor == int(x.shape[1]):
            up = keras.layers.UpSampling2D(factor, name="yolo_upsample")(up)
            x = keras.layers.Concatenate(name="yolo_fuse")([x, up])
    for i in range(s["head_layers"]):
        x = conv_bn_relu(x, s["head_channels"], 3, 1, f"yolo_head{i}")
    raw = keras.layers.Conv2D(5 * s["boxes_per_cell"] + num_classes, 1, name="raw",
                              dtype="float32")(x)
    return keras.Model(inputs, {"raw": raw}, name=f"yolo_{config['backbone']}")


def info(config, num_classes, model):
    shape = model.get_layer("raw").output.shape
    if int(shape[1]) != int(shape[2]):
        raise ValueError(f"YOLO needs a square grid; got {shape[1]}x{shape[2]}.")
    return {"name": "yolo", "grid_size": int(shape[1]),
            "boxes_per_cell": yolo_settings(config)["boxes_per_cell"]}


def _split(raw, boxes_per_cell):
    """Raw (N, S, S, 5B + C) → sigmoid box params (N, S, S, B, 5), class probs (N, S, S, C)."""
    raw = ops.cast(raw, "float32")
    n, s = ops.shape(raw)[0], ops.shape(raw)[1]
    boxes = ops.sigmoid(ops.reshape(raw[..., :5 * boxes_per_cell],
                                    (n, s, s, boxes_per_cell, 5)))
    probs = ops.softmax(raw[..., 5 * boxes_per_cell:], axis=-1)
    return boxes, probs


def _cell_boxes(params, grid_size):
    """(N, S, S, B, ≥4) ``(x, y, √w, √h)`` → (N, S, S, B, 4) normalized yxyx."""
    cells = ops.cast(ops.arange(grid_size), "float32")
    cy = (cells[None, :, None, None] + params[..., 1]) / grid_size
    cx = (cells[None, None, :, None] + params[..., 0]) / grid_size
    h, w = ops.square(params[..., 3]), ops.square(params[..., 2])
    return ops.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], axis=-1)


@keras.saving.register_keras_serializable(package="cnn_apps")
class YoloV1Loss(keras.losses.Loss):
    """YOLO v1 sum-squared loss (module doc) for ``y_true`` = padded gt (N, M, 5) and
    ``y_pred`` = raw (N, S, S, 5B + C). Returns one value per image."""

    def __init__(self, grid_size, boxes_per_cell=2, num_classes=1, lambda_coord=5.0,
                 lambda_noobj=0.5, rescore=True, name="yolo_v1_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        for arg, value in (("grid_size", grid_size), ("boxes_per_cell", boxes_per_cell),
                           ("num_classes", num_classes)):
            if int(value) < 1:
                raise ValueError(f"`{arg}` must be >= 1; got {value}.")
        self.grid_size, self.boxes_per_cell = int(grid_size), int(boxes_per_cell)
        self.num_classes = int(num_classes)
        self.lambda_coord, self.lambda_noobj = float(lambda_coord), float(lambda_noobj)
        self.rescore = bool(rescore)

    def call(self, y_true, y_pred):
        s, b = self.grid_size, self.boxes_per_cell
        y_true = ops.cast(y_true, "float32")
        params, probs = _split(y_pred, b)
        n = ops.shape(params)[0]
        gt, cls = y_true[..., :4], y_true[..., 4]
        valid = cls >= 0
        cy, cx = (gt[..., 0] + gt[..., 2]) / 2, (gt[..., 1] + gt[..., 3]) / 2
        row = ops.clip(ops.cast(ops.floor(cy * s), "int32"), 0, s - 1)
        col = ops.clip(ops.cast(ops.floor(cx * s), "int32"), 0, s - 1)
        # the first gt of a cell owns it
        obj_cell, target = first_claims(row * s + col, valid, ops.concatenate([
            gt, ops.one_hot(ops.cast(ops.maximum(cls, 0), "int32"), self.num_classes)],
            axis=-1), s * s)  # (N, S²) in {0, 1}, (N, S², 4 + C)
        target = ops.reshape(target, (n, s, s, 4 + self.num_classes))
        obj_cell = ops.reshape(obj_cell, (n, s, s))
        t_box = target[..., :4]
        t_h, t_w = t_box[..., 2] - t_box[..., 0], t_box[..., 3] - t_box[..., 1]
        cells = ops.cast(ops.arange(s), "float32")
        t_x = (t_box[..., 1] + t_box[..., 3]) / 2 * s - cells[None, None, :]
        t_y = (t_box[..., 0] + t_box[..., 2]) / 2 * s - cells[None, :, None]
        t_sw, t_sh = ops.sqrt(ops.maximum(t_w, 0.0)), ops.sqrt(ops.maximum(t_h, 0.0))
        pred_boxes = _cell_boxes(params, s)  # (N, S, S, B, 4)
        iou = box_iou(pred_boxes, t_box[..., None, :])[..., 0]  # (N, S, S, B)
        iou = ops.stop_gradient(iou)
        responsible = ops.one_hot(ops.argmax(iou, axis=-1), b) * obj_cell[..., None]
        noobj = 1.0 - responsible
        coord = (ops.square(params[..., 0] - t_x[..., None])
                 + ops.square(params[..., 1] - t_y[..., None])
                 + ops.square(params[..., 2] - t_sw[..., None])
                 + ops.square(params[..., 3] - t_sh[..., None]))
        conf = params[..., 4]
        conf_target = iou if self.rescore else 1.0
        per_box = (self.lambda_coord * responsible * coord
                   + responsible * ops.square(conf - conf_target)
                   + self.lambda_noobj * noobj * ops.square(conf))
        class_term = obj_cell * ops.sum(ops.square(probs - target[..., 4:]), axis=-1)
        return ops.sum(per_box, axis=(1, 2, 3)) + ops.sum(class_term, axis=(1, 2))

    def get_config(self):
        return {**super().get_config(), "grid_size": self.grid_size,
                "boxes_per_cell": self.boxes_per_cell, "num_classes": self.num_classes,
                "lambda_coord": self.lambda_coord, "lambda_noobj": self.lambda_noobj,
                "rescore": self.rescore}


def loss(config, det_info, num_classes):
    s = yolo_settings(config)
    return YoloV1Loss(det_info["grid_size"], det_info["boxes_per_cell"], num_classes,
                      s["lambda_coord"], s["lambda_noobj"], s["rescore"])


def decode(raw, det_info):
    """Raw → (boxes (N, S·S·B, 4) normalized, class-specific scores (N, S·S·B, C))."""
    s, b = int(det_info["grid_size"]), int(det_info["boxes_per_cell"])
    params, probs = _split(raw, b)
    boxes = ops.clip(_cell_boxes(params, s), 0.0, 1.0)
    scores = params[..., 4:5] * probs[:, :, :, None, :]  # Pr(class|obj)·confidence
    n = ops.shape(params)[0]
    return (ops.reshape(boxes, (n, s * s * b, 4)),
            ops.reshape(scores, (n, s * s * b, ops.shape(probs)[-1])))


def postprocess(raw, info):
    boxes, scores = decode(raw, info["detector"])
    return nms_outputs(boxes, scores, info)
