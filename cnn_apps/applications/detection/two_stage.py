"""Pieces shared by the RoI-based (two-stage) detectors: R-CNN, SPP-net, Fast R-CNN and
Faster R-CNN (survey S0 §5.2; SEED_CHECKLIST §14.2, T-DET-08 box voting, T-DET-10 OHEM).

* :func:`sample_roi_targets` — Fast R-CNN mini-batch sampling: append the ground truth to the
  proposals, IoU-match, label foreground (IoU >= ``fg_iou``, class c → label c + 1) and
  background (IoU in [``bg_iou_low``, ``bg_iou_high``) → label 0), sample ``batch_rois`` RoIs
  per image with at most ``positive_fraction`` foreground (the rest background), and encode
  the box-regression targets ``t = encode_boxes(gt, roi, ROI_VARIANCES)`` (center-size deltas
  ``ty = (cy − rcy)/rh/0.1``, ``tx = (cx − rcx)/rw/0.1``, ``th = log(h/rh)/0.2``,
  ``tw = log(w/rw)/0.2``). Padding / unused slots get label −1.
* :func:`build_box_head` — pooled RoI features → fc layers → C + 1 class logits (index 0 =
  background) and 4C class-specific box deltas.
* :func:`fast_rcnn_loss` — the multi-task loss per RoI, ``l_i = CE(softmax(p_i), u_i) +
  λ [u_i >= 1] Σ smoothL1(t^{u_i}_i − v_i)``, averaged over the RoIs it keeps; with OHEM
  (Shrivastava et al. 2016) the loss of every RoI is computed and only the ``ohem_batch``
  hardest (largest ``l_i``, chosen without gradient) per image are back-propagated; as in the
  paper, NMS over the RoIs ranked by loss (IoU ``ohem_nms_iou``, 0.7) first removes RoIs that
  overlap a harder one, so one hard region is not counted many times.
* :func:`roi_raw_outputs` / :func:`postprocess` — the raw inference layout and the in-graph
  post-processing (class-aware NMS, then optional box voting, Gidaris & Komodakis 2015).
* :class:`TwoStageModel` — a ``keras.Model`` base class whose ``train_step`` / ``test_step``
  take the padded ground truth from ``y["raw"]`` and minimize ``detection_losses(...)``.

Raw output layout of every RoI detector (``model(inputs)["raw"]``), R = RoIs per image::

    raw (B, R, 4C + C):  raw[..., :4C] = decoded class-specific boxes, normalized (ymin, xmin,
                         ymax, xmax) clipped to [0, 1], class c at [4c : 4c + 4];
                         raw[..., 4C:] = class probabilities softmax(p)[1:] (background
                         dropped); 0 for padding RoIs (all-zero rows).

Ground truth: the padded detection rows ``gt`` (B, M, 5) = (ymin, xmin, ymax, xmax, class)
normalized, class −1 = padding.

Example::

    rois, labels, targets = sample_roi_targets(proposals, gt, num_classes=4, batch_rois=64)
    head = build_box_head((7, 7), channels=64, num_classes=4)
    out = head(RoIAlign2D(7)([features, rois]))
    losses = fast_rcnn_loss(out["class_logits"], out["box_deltas"], labels, targets)
"""

from __future__ import annotations

import abc

import keras
from keras import ops

from cnn_apps.applications.detection.common import backbone_arguments, nms_outputs, smooth_l1
from cnn_apps.ops import box_area, box_iou, box_voting, decode_boxes, encode_boxes

__all__ = ["ROI_VARIANCES", "sample_roi_targets", "sampling_keys", "build_box_head",
           "fast_rcnn_loss", "ohem_selection", "roi_raw_outputs", "split_raw", "vote_detections",
           "postprocess", "TwoStageModel", "head_settings", "plain", "backbone_args"]

#: scale divisors of the RoI box-regression targets (Fast R-CNN normalizes its targets by
#: their standard deviation, about these values).
ROI_VARIANCES = (0.1, 0.1, 0.2, 0.2)


def sampling_keys(foreground, background, uniform, batch, positive_fraction):
    """Random-subsampling keys: taking the ``batch`` largest keys per row samples up to
    ``round(batch · positive_fraction)`` foreground entries (keys in [2, 3)) and fills the
    rest with background (keys in [0, 1)); entries in neither set (or foreground beyond the
    cap) get −1 and are never taken.

    Args:
        foreground, background: (B, N) bool masks; uniform: (B, N) random numbers in [0, 1)
            deciding which entries are drawn.
    """
    cap = int(round(batch * positive_fraction))
    fg_key = ops.where(foreground, uniform, -1.0)
    rank = ops.argsort(ops.argsort(-fg_key, axis=1), axis=1)  # 0 = largest key of the row
    keep_fg = ops.logical_and(foreground, rank < cap)
    return ops.where(keep_fg, 2.0 + uniform,
                     ops.where(ops.logical_and(background, ops.logical_not(foreground)),
                               uniform, -1.0))


def sample_roi_targets(proposals, gt, num_classes, batch_rois=64, positive_fraction=0.25,
                       fg_iou=0.5, bg_iou_high=0.5, bg_iou_low=0.0, variances=ROI_VARIANCES,
                       seed=None):
    """Fast R-CNN RoI sampling and targets, in the graph, for a batch (module doc).

    Args:
        proposals: (B, P, 4) normalized yxyx; all-zero (zero-area) rows are padding.
        gt: (B, M, 5) padded ground truth rows (class −1 = padding).
        num_classes: C (labels are 0..C).
        batch_rois: R, RoIs sampled per image; positive_fraction: the foreground share cap.
        fg_iou: foreground when the best IoU with a gt is >= this; bg_iou_high, bg_iou_low:
            background when the best IoU is in [bg_iou_low, bg_iou_high) (an image without
            objects has IoU 0 everywhere). Candidates in neither range are never sampled.
        variances: regression target divisors; seed: int, ``keras.random.SeedGenerator`` or
            None, drives the random draw.

    Returns:
        ``(rois (B, R, 4), labels (B, R) int32, targets (B, R, 4))``: labels 0 = background,
        c + 1 = class c, −1 = unused slot (its roi and target are 0); fewer than R valid
        candidates leave unused slots at the end. Foreground slots come first. No gradient
        flows through any output.
    """
    if not 0.0 <= positive_fraction <= 1.0:
        raise ValueError(f"`positive_fraction` must be in [0, 1]; got {positive_fraction}.")
    if int(batch_rois) < 1:
        raise ValueError(f"`batch_rois` must be >= 1; got {batch_rois}.")
    if not bg_iou_low <= bg_iou_high <= fg_iou:
        raise ValueError(f"need bg_iou_low <= bg_iou_high <= fg_iou; got {bg_iou_low}, "
                         f"{bg_iou_high}, {fg_iou}.")
    batch_rois = int(batch_rois)
    proposals = ops.stop_gradient(ops.cast(proposals, "float32"))
    gt = ops.cast(gt, "float32")
    gt_boxes, gt_class = gt[..., :4], gt[..., 4]
    gt_valid = gt_class >= 0
    batch = ops.shape(proposals)[0]
    # candidates: proposals, the gt boxes, and batch_rois zero rows so top_k always has room
    pad = ops.zeros((batch, batch_rois, 4), "float32")
    candidates = ops.concatenate([proposals, gt_boxes, pad], axis=1)
    valid = ops.concatenate([box_area(proposals) > 0, gt_valid,
                             ops.zeros((batch, batch_rois), "bool")], axis=1)
    iou = ops.where(gt_valid[:, None, :], box_iou(candidates, gt_boxes), -1.0)  # (B, N, M)
    best_iou = ops.max(iou, axis=2)
    best_gt = ops.cast(ops.argmax(iou, axis=2), "int32")
    overlap = ops.maximum(best_iou, 0.0)
    foreground = ops.logical_and(valid, best_iou >= fg_iou)
    background = ops.logical_and(valid, ops.logical_and(overlap < bg_iou_high,
                                                        overlap >= bg_iou_low))
    uniform = keras.random.uniform(ops.shape(best_iou), seed=seed)
    keys = sampling_keys(foreground, background, uniform, batch_rois, positive_fraction)
    values, index = ops.top_k(keys, k=batch_rois)
    index = ops.cast(index, "int32")
    taken, is_fg = values >= 0.0, values >= 2.0
    rois = ops.take_along_axis(candidates, index[..., None], axis=1)
    rois = ops.where(taken[..., None], rois, 0.0)
    gt_index = ops.take_along_axis(best_gt, index, axis=1)
    cls = ops.cast(ops.take_along_axis(gt_class, gt_index, axis=1), "int32")
    labels = ops.where(is_fg, cls + 1, ops.where(taken, 0, -1))
    matched = ops.take_along_axis(gt_boxes, gt_index[..., None], axis=1)
    safe_rois = ops.where(is_fg[..., None], rois, ops.convert_to_tensor([0.0, 0.0, 1.0, 1.0]))
    safe_gt = ops.where(is_fg[..., None], matched, safe_rois)
    targets = ops.where(is_fg[..., None], encode_boxes(safe_gt, safe_rois, variances), 0.0)
    return (ops.stop_gradient(rois), ops.stop_gradient(ops.cast(labels, "int32")),
            ops.stop_gradient(targets))


def plain(value):
    """A JSON round trip: Keras' tracked dicts/lists (attributes of a layer) → plain ones."""
    import json

    return json.loads(json.dumps(value))


def backbone_args(config):
    """The backbone builder arguments the config resolves to (``common.backbone_arguments``:
    ``backbone_args``, else ``backbone_defaults[backbone]``); the models store them so a
    reloaded model rebuilds the same backbone."""
    return dict(backbone_arguments(config))


def head_settings(section, name="two_stage"):
    """The RoI-head keys shared by the two-stage config sections (``name``: the section, for
    error messages), with defaults; ConfigError on out-of-range values."""
    from cnn_apps.errors import ConfigError

    section = dict(section or {})
    units = section.get("head_units", [256, 256])
    values = {"head_units": [int(u) for u in (units or [])],
              "batch_rois": int(section.get("batch_rois", 64)),
              "positive_fraction": float(section.get("positive_fraction", 0.25)),
              "fg_iou": float(section.get("fg_iou", 0.5)),
              "bg_iou_high": float(section.get("bg_iou_high", 0.5)),
              "bg_iou_low": float(section.get("bg_iou_low", 0.0)),
              "box_weight": float(section.get("box_weight", 1.0)),
              "ohem": bool(section.get("ohem", False)),
              "ohem_batch": int(section.get("ohem_batch", 32)),
              "ohem_nms_iou": float(section.get("ohem_nms_iou", 0.7)),
              "box_voting": bool(section.get("box_voting", False)),
              "voting_iou": float(section.get("voting_iou", 0.5))}
    if not 0.0 <= values["positive_fraction"] <= 1.0:
        raise ConfigError(f"{name}.positive_fraction must be in [0, 1], got "
                          f"{values['positive_fraction']}")
    if not values["bg_iou_low"] <= values["bg_iou_high"] <= values["fg_iou"] <= 1.0:
        raise ConfigError(f"{name}: need bg_iou_low <= bg_iou_high <= fg_iou <= 1, got "
                          f"{values['bg_iou_low']}, {values['bg_iou_high']}, "
                          f"{values['fg_iou']}")
    for key in ("batch_rois", "ohem_batch"):
        if values[key] < 1:
            raise ConfigError(f"{name}.{key} must be >= 1, got {values[key]}")
    if not 0.0 < values["ohem_nms_iou"] <= 1.0:
        raise ConfigError(f"{name}.ohem_nms_iou must be in (0, 1] (1 = no NMS), got "
                          f"{values['ohem_nms_iou']}")
    if not 0.0 < values["voting_iou"] <= 1.0:
        raise ConfigError(f"{name}.voting_iou must be in (0, 1], got {values['voting_iou']}")
    return values


def build_box_head(pool_size, channels, num_classes, units=(256, 256), name="box_head"):
    """The RoI box head: ``(B, R, ph, pw, channels)`` pooled features → flatten → Dense+ReLU
    per entry of ``units`` → ``{"class_logits": (B, R, C + 1), "box_deltas": (B, R, 4C)}``.

    The predictors start as in Fast R-CNN: class logits ~ N(0, 0.01²), deltas ~ N(0, 0.001²),
    zero biases. Returns a functional ``keras.Model`` (R may vary between calls).
    """
    ph, pw = (pool_size, pool_size) if isinstance(pool_size, int) else tuple(pool_size)
    if int(num_classes) < 1:
        raise ValueError(f"`num_classes` must be >= 1; got {num_classes}.")
    pooled = keras.Input((None, ph, pw, int(channels)), name="pooled")
    x = keras.layers.Reshape((-1, ph * pw * int(channels)), name=f"{name}_flatten")(pooled)
    for i, size in enumerate(units):
        x = keras.layers.Dense(int(size), activation="relu", name=f"{name}_fc{i + 1}")(x)
    logits = keras.layers.Dense(
        int(num_classes) + 1, kernel_initializer=keras.initializers.RandomNormal(0.0, 0.01),
        name=f"{name}_class_logits", dtype="float32")(x)
    deltas = keras.layers.Dense(
        4 * int(num_classes), kernel_initializer=keras.initializers.RandomNormal(0.0, 0.001),
        name=f"{name}_box_deltas", dtype="float32")(x)
    return keras.Model(pooled, {"class_logits": logits, "box_deltas": deltas}, name=name)


def _class_deltas(box_deltas, num_classes):
    """(B, R, 4C) → (B, R, C, 4)."""
    shape = ops.shape(box_deltas)
    return ops.reshape(box_deltas, (shape[0], shape[1], num_classes, 4))


def ohem_selection(hardness, rois, ohem_batch, nms_iou=0.7):
    """OHEM's hard RoI sampler (Shrivastava et al. 2016): a (B, R) 0/1 mask of the at most
    ``ohem_batch`` RoIs per image that are back-propagated.

    ``hardness`` (B, R) is the per-RoI loss (negative = ignored RoI). RoIs are taken in
    decreasing loss; with ``rois`` (B, R, 4) and ``nms_iou`` < 1 a RoI whose IoU with an
    already taken (harder) one exceeds ``nms_iou`` is skipped (greedy NMS, the paper's 0.7).
    """
    hardness = ops.stop_gradient(ops.cast(hardness, "float32"))
    count = int(hardness.shape[-1])
    if rois is None or nms_iou >= 1.0:
        rank = ops.argsort(ops.argsort(-hardness, axis=1), axis=1)
        return ops.cast((rank < int(ohem_batch)) & (hardness >= 0), "float32")
    import tensorflow as tf  # batched NMS returning indices is a tf.image op

    k = min(int(ohem_batch), count)
    index, valid = tf.image.non_max_suppression_padded(
        tf.cast(rois, tf.float32), hardness, k, iou_threshold=float(nms_iou),
        score_threshold=-0.5, pad_to_max_output_size=True)
    taken = tf.cast(tf.range(k)[None, :] < valid[:, None], tf.float32)  # (B, k)
    return tf.reduce_max(tf.one_hot(index, count) * taken[..., None], axis=1)


def fast_rcnn_loss(class_logits, box_deltas, labels, targets, box_weight=1.0, ohem_batch=None,
                   rois=None, ohem_nms_iou=0.7):
    """Fast R-CNN multi-task loss (module doc), optionally with OHEM.

    Args:
        class_logits: (B, R, C + 1); box_deltas: (B, R, 4C) class-specific deltas.
        labels: (B, R) int (0 background, c + 1 class c, −1 ignored); targets: (B, R, 4).
        box_weight: λ. ohem_batch: None/0 = every valid RoI; k > 0 = only the k RoIs per image
            with the largest per-RoI loss (online hard example mining, :func:`ohem_selection`).
        rois: (B, R, 4) the RoIs, for OHEM's NMS among them (None: no NMS).
        ohem_nms_iou: that NMS's IoU threshold (1 = none).

    Returns:
        dict of scalars: ``loss`` = ``cls_loss + λ·box_loss``, ``cls_loss``, ``box_loss``,
        each a sum over the kept RoIs divided by their number (>= 1), ``per_roi`` (B, R)
        (0 for ignored RoIs), and ``balanced`` = mean ``l_i`` over the kept foreground RoIs +
        mean ``l_i`` over the kept background RoIs: unlike ``loss`` it does not grow when
        better proposals put more foreground RoIs into the sample, so it is the validation
        loss the two-stage models report (checkpoint selection).
    """
    logits = ops.cast(class_logits, "float32")
    num_classes = int(logits.shape[-1]) - 1
    labels = ops.cast(labels, "int32")
    valid = labels >= 0
    safe = ops.maximum(labels, 0)
    ce = (ops.logsumexp(logits, axis=-1)
          - ops.sum(logits * ops.one_hot(safe, num_classes + 1), axis=-1))
    deltas = _class_deltas(ops.cast(box_deltas, "float32"), num_classes)
    pick = ops.one_hot(ops.maximum(labels - 1, 0), num_classes)[..., None]
    chosen = ops.sum(deltas * pick, axis=2)  # (B, R, 4): deltas of the gt class
    foreground = ops.cast(labels > 0, "float32")
    loc = ops.sum(smooth_l1(chosen - ops.cast(targets, "float32")), axis=-1) * foreground
    per_roi = ops.where(valid, ce + box_weight * loc, 0.0)
    weight = ops.cast(valid, "float32")
    if ohem_batch:
        hardness = ops.where(valid, per_roi, -1.0)
        weight = weight * ohem_selection(hardness, rois, ohem_batch, ohem_nms_iou)
    count = ops.maximum(ops.sum(weight), 1.0)
    cls_loss = ops.sum(ce * weight) / count
    box_loss = ops.sum(loc * weight) / count
    fg_weight = weight * foreground
    bg_weight = weight * (1.0 - foreground)
    balanced = (ops.sum(per_roi * fg_weight) / ops.maximum(ops.sum(fg_weight), 1.0)
                + ops.sum(per_roi * bg_weight) / ops.maximum(ops.sum(bg_weight), 1.0))
    return {"loss": cls_loss + box_weight * box_loss, "cls_loss": cls_loss,
            "box_loss": box_loss, "per_roi": per_roi, "balanced": balanced}


def roi_raw_outputs(class_logits, box_deltas, rois, variances=ROI_VARIANCES):
    """Head outputs + their RoIs (B, R, 4) → the raw layout (module doc), (B, R, 5C)."""
    logits = ops.cast(class_logits, "float32")
    num_classes = int(logits.shape[-1]) - 1
    rois = ops.cast(rois, "float32")
    present = ops.cast(box_area(rois) > 0, "float32")[..., None]
    probs = ops.softmax(logits, axis=-1)[..., 1:] * present
    deltas = _class_deltas(ops.cast(box_deltas, "float32"), num_classes)
    boxes = ops.clip(decode_boxes(deltas, rois[:, :, None, :], variances), 0.0, 1.0)
    shape = ops.shape(boxes)
    flat = ops.reshape(boxes, (shape[0], shape[1], 4 * num_classes))
    return ops.concatenate([flat, probs], axis=-1)


def split_raw(raw, num_classes):
    """Raw (B, R, 5C) → (boxes (B, R, C, 4), scores (B, R, C))."""
    raw = ops.cast(raw, "float32")
    if raw.shape[-1] is not None and raw.shape[-1] != 5 * num_classes:
        raise ValueError(f"raw RoI outputs must have 5·C = {5 * num_classes} columns; got "
                         f"{raw.shape[-1]}.")
    shape = ops.shape(raw)
    boxes = ops.reshape(raw[..., :4 * num_classes], (shape[0], shape[1], num_classes, 4))
    return boxes, raw[..., 4 * num_classes:]


def vote_detections(detections, boxes, scores, iou_threshold=0.5):
    """Box voting after NMS (Gidaris & Komodakis 2015; survey S0 §5.2, T-DET-08).

    Each kept detection of class c becomes the score-weighted mean of the image's class-c
    boxes (all RoIs, before NMS) with IoU >= ``iou_threshold`` (``cnn_apps.ops.box_voting``);
    padding rows stay as they are.

    Args:
        detections: the four OD API outputs (``detection_classes`` = class index + 1).
        boxes: (B, R, C, 4) class-specific boxes; scores: (B, R, C).

    Returns:
        (B, K, 4) voted ``detection_boxes``.
    """
    import tensorflow as tf

    kept = tf.cast(detections["detection_boxes"], tf.float32)  # (B, K, 4)
    cls = tf.maximum(tf.cast(detections["detection_classes"], tf.int32) - 1, 0)  # (B, K)
    cand = tf.gather(tf.transpose(tf.cast(boxes, tf.float32), [0, 2, 1, 3]), cls,
                     batch_dims=1)  # (B, K, R, 4)
    cand_scores = tf.gather(tf.transpose(tf.cast(scores, tf.float32), [0, 2, 1]), cls,
                            batch_dims=1)  # (B, K, R)
    voted = box_voting(kept[:, :, None, :], cand, cand_scores, iou_threshold)[:, :, 0, :]
    rows = tf.range(tf.shape(kept)[1])[None, :]
    real = rows < tf.cast(detections["num_detections"], tf.int32)[:, None]
    return tf.where(real[..., None], tf.cast(voted, tf.float32), kept)


def postprocess(raw, info):
    """Raw (B, R, 5C) → the four OD API outputs: class-aware NMS over the class-specific
    boxes (``common.nms_outputs``), then box voting when ``info["detector"]["box_voting"]``."""
    det = info["detector"]
    boxes, scores = split_raw(raw, int(det["num_classes"]))
    out = nms_outputs(boxes, scores, info)
    if det.get("box_voting"):
        out["detection_boxes"] = vote_detections(out, boxes, scores,
                                                 float(det.get("voting_iou", 0.5)))
    return out


class TwoStageModel(keras.Model, metaclass=abc.ABCMeta):
    """Base class of the jointly trained RoI detectors: subclasses build their networks in
    ``__init__`` and implement ``call`` (→ ``{"raw": ...}``) and
    ``detection_losses(inputs, gt, training)`` → dict of scalar losses with key ``loss`` (the
    total minimized). ``fit`` data: ``(inputs, {"raw": gt})``; the logged metrics are the
    means of every returned loss (``val_loss`` for checkpointing).

    ``compile(optimizer)`` takes no loss (it is built in). ``detection_losses`` with
    ``training=False`` (``test_step``) reports as ``loss`` the RPN losses plus the
    fg/bg-balanced head loss (``fast_rcnn_loss``'s ``balanced``), so ``val_loss`` stays
    comparable between epochs while the proposals improve.
    """

    loss_names = ("loss",)

    def _init_trackers(self, seed=0):
        self.seed_generator = keras.random.SeedGenerator(int(seed), name="sampling_seed")
        self.trackers = {name: keras.metrics.Mean(name=name) for name in self.loss_names}

    @property
    def metrics(self):
        return list(self.trackers.values())

    def compile(self, optimizer="adam", jit_compile=False, **kwargs):
        if kwargs.get("loss") is not None:
            raise ValueError(f"{type(self).__name__}.compile: the detection loss is built in; "
                             "do not pass loss")
        kwargs.pop("loss", None)
        kwargs.pop("metrics", None)
        super().compile(optimizer=optimizer, jit_compile=jit_compile, **kwargs)
        self.optimizer.build(self.trainable_variables)

    def get_compile_config(self):
        if getattr(self, "optimizer", None) is None:
            return {}
        return {"optimizer": keras.optimizers.serialize(self.optimizer)}

    def compile_from_config(self, config):
        if config:
            self.compile(optimizer=keras.optimizers.deserialize(config["optimizer"]))

    def get_layer(self, name=None, index=None):
        """Also finds layers nested in ``feature_net`` (e.g. ``backbone``, which the training
        core freezes for ``freeze_backbone_epochs``)."""
        try:
            return super().get_layer(name, index)
        except ValueError:
            if name is None or getattr(self, "feature_net", None) is None:
                raise
            return self.feature_net.get_layer(name)

    @staticmethod
    def _unpack(data):
        if not isinstance(data, (list, tuple)) or len(data) < 2:
            raise ValueError("two-stage detectors train on (inputs, {'raw': gt}) pairs")
        inputs, y = data[0], data[1]
        gt = y["raw"] if isinstance(y, dict) else y
        return inputs, gt

    def _record(self, losses):
        for name, tracker in self.trackers.items():
            tracker.update_state(losses[name])
        return {name: tracker.result() for name, tracker in self.trackers.items()}

    def train_step(self, data):
        import tensorflow as tf

        inputs, gt = self._unpack(data)
        with tf.GradientTape() as tape:
            losses = self.detection_losses(inputs, gt, training=True)
            total = losses["loss"]
            if self.losses:
                total = total + ops.sum(ops.stack(self.losses))
        variables = self.trainable_variables
        grads = tape.gradient(total, variables)
        self.optimizer.apply_gradients(
            [(g, v) for g, v in zip(grads, variables) if g is not None])
        return self._record(losses)

    def test_step(self, data):
        inputs, gt = self._unpack(data)
        return self._record(self.detection_losses(inputs, gt, training=False))

    @abc.abstractmethod
    def detection_losses(self, inputs, gt, training):
        """``{"loss": total, ...}`` scalar losses for ``inputs`` and padded ``gt``."""
