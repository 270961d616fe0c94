"""The post-CNN stage shared by R-CNN and SPP-net: per-class linear SVMs with hard negative
mining and class-specific bounding-box regression on CNN features of region proposals
(survey S0 §5.2, SEED_CHECKLIST T-DET-03/T-DET-05; Girshick et al. 2014 [ext: the bbox
regression stage]).

**Linear SVM** (one binary problem per class, L2-regularized, hinge loss, as liblinear's
``-s 3`` that R-CNN used)::

    min_w  ½‖w‖² + C Σ_i c_i max(0, 1 − y_i wᵀx̃_i),    x̃_i = (x_i, B)

with the bias as an extra constant feature ``B`` (``bias_scale``; regularized like liblinear),
``c_i = positive_weight`` for positives and 1 for negatives. Defaults are R-CNN's training
code: C = 10⁻³ with features scaled to mean L2 norm 20, B = 10, positive weight 2 (C = 1
overfits the hard negatives: on ``shapes`` SPP-net's AP50 fell from 0.55 to 0.18). Solved by dual coordinate descent
(Hsieh et al. 2008): with ``α_i ∈ [0, C·c_i]`` and ``w = Σ α_i y_i x̃_i``, each step sets
``α_i ← clip(α_i − (y_i wᵀx̃_i − 1) / ‖x̃_i‖², 0, C·c_i)``; it stops when the projected
gradients span less than ``tol``.

**Training data per class c** (R-CNN): positives are the ground-truth boxes of class c;
negatives are proposals whose IoU with every ground truth of class c is below
``negative_iou`` (0.3). **Hard negative mining**: start from ``initial_negatives`` random
negatives, train, score every negative, add those inside the margin (score > −1) and drop
cached easy ones (score < −1.2), retrain; ``mining_rounds`` times or until no new hard
negative appears.

**Box regression** (class-specific ridge, R-CNN appendix C): proposals P with IoU >=
``regression_iou`` (0.6) with a ground truth G of class c regress the centre-size deltas
``t = encode_boxes(G, P, variances)`` from the features: ``W = (X̄ᵀX̄ + λI)⁻¹ X̄ᵀT̄``,
``b = t̄ − x̄ᵀW`` (centred, so the intercept is not shrunk), ``λ = ridge_lambda``.

Example::

    w, b = train_linear_svm(x, y_pm1, c=1.0)          # y in {−1, +1}
    weights, bias = fit_ridge(x, targets, 1000.0)
"""

from __future__ import annotations

import numpy as np

__all__ = ["train_linear_svm", "hinge_objective", "fit_ridge", "box_iou_np",
           "same_image_overlaps", "fit_class_svms", "fit_box_regressors", "svm_settings"]


def svm_settings(section: dict | None) -> dict:
    """The SVM / regression knobs of a detector's config section, defaults filled in."""
    section = dict(section or {})
    out = {"svm_c": float(section.get("svm_c", 0.001)),
           "positive_weight": float(section.get("positive_weight", 2.0)),
           "bias_scale": float(section.get("bias_scale", 10.0)),
           "feature_norm": float(section.get("feature_norm", 20.0)),
           "negative_iou": float(section.get("negative_iou", 0.3)),
           "initial_negatives": int(section.get("initial_negatives", 2000)),
           "mining_rounds": int(section.get("mining_rounds", 2)),
           "regression_iou": float(section.get("regression_iou", 0.6)),
           "ridge_lambda": float(section.get("ridge_lambda", 1000.0)),
           "svm_epochs": int(section.get("svm_epochs", 30))}
    for key in ("svm_c", "positive_weight", "bias_scale", "feature_norm"):
        if out[key] <= 0:
            raise ValueError(f"`{key}` must be > 0; got {out[key]}.")
    if out["ridge_lambda"] < 0:
        raise ValueError(f"`ridge_lambda` must be >= 0; got {out['ridge_lambda']}.")
    if out["mining_rounds"] < 0 or out["initial_negatives"] < 1:
        raise ValueError("`mining_rounds` must be >= 0 and `initial_negatives` >= 1; got "
                         f"{out['mining_rounds']} and {out['initial_negatives']}.")
    return out


def hinge_objective(w, b, features, labels, c=1.0, positive_weight=1.0, bias_scale=1.0):
    """The primal objective above for ``w`` (d,), bias ``b`` (= w_B·B), labels ±1."""
    x = np.asarray(features, np.float64)
    y = np.asarray(labels, np.float64)
    weight = np.where(y > 0, positive_weight, 1.0)
    margins = np.maximum(0.0, 1.0 - y * (x @ w + b))
    return 0.5 * (w @ w + (b / bias_scale) ** 2) + c * float((weight * margins).sum())


def train_linear_svm(features, labels, c=1.0, positive_weight=1.0, bias_scale=1.0,
                     max_epochs=50, tol=1e-3, seed=0):
    """L2-regularized hinge-loss linear SVM by dual coordinate descent (module doc).

    Args:
        features: (n, d) floats; labels: (n,) in {−1, +1}.
        c: C > 0. positive_weight: loss weight of positives. bias_scale: the constant B.

    Returns:
        ``(w (d,), b)`` float64 with decision function ``x·w + b``.
    """
    x = np.asarray(features, np.float64)
    y = np.asarray(labels, np.float64).reshape(-1)
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"`features` must be (n, d) and `labels` (n,); got {x.shape} and "
                         f"{y.shape}.")
    if len(y) == 0 or not np.all(np.isin(y, (-1.0, 1.0))):
        raise ValueError("`labels` must be a non-empty array of -1 / +1.")
    if c <= 0 or positive_weight <= 0 or bias_scale <= 0:
        raise ValueError("`c`, `positive_weight` and `bias_scale` must be > 0.")
    xb = np.concatenate([x, np.full((len(x), 1), float(bias_scale))], axis=1)
    upper = c * np.where(y > 0, positive_weight, 1.0)
    q = np.einsum("ij,ij->i", xb, xb)
    alpha = np.zeros(len(y))
    w = np.zeros(xb.shape[1])
    rng = np.random.default_rng(seed)
    for _ in range(int(max_epochs)):
        pg_max, pg_min = -np.inf, np.inf
        for i in rng.permutation(len(y)):
            g = y[i] * (xb[i] @ w) - 1.0
            a = alpha[i]
            pg = min(g, 0.0) if a <= 0.0 else (max(g, 0.0) if a >= upper[i] else g)
            pg_max, pg_min = max(pg_max, pg), min(pg_min, pg)
            if abs(pg) > 1e-12 and q[i] > 0:
                new = min(max(a - g / q[i], 0.0), upper[i])
                w += (new - a) * y[i] * xb[i]
                alpha[i] = new
        if pg_max - pg_min < tol:
            break
    return w[:-1], float(w[-1] * bias_scale)


def fit_ridge(features, targets, lam):
    """Ridge regression with an unpenalized intercept: ``(W (d, k), b (k,))`` (module doc)."""
    x = np.asarray(features, np.float64)
    t = np.asarray(targets, np.float64)
    if x.ndim != 2 or t.ndim != 2 or len(x) != len(t):
        raise ValueError(f"`features` must be (n, d) and `targets` (n, k); got {x.shape} and "
                         f"{t.shape}.")
    if lam < 0:
        raise ValueError(f"`lam` must be >= 0; got {lam}.")
    x_mean, t_mean = x.mean(axis=0), t.mean(axis=0)
    xc, tc = x - x_mean, t - t_mean
    gram = xc.T @ xc + float(lam) * np.eye(x.shape[1])
    weights = np.linalg.solve(gram, xc.T @ tc)
    return weights, t_mean - x_mean @ weights


def box_iou_np(a, b):
    """Pairwise IoU of (n, 4) and (m, 4) yxyx boxes → (n, m) (numpy, for the numpy stage)."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    ih = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) -
                 np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iw = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) -
                 np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ih * iw
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def same_image_overlaps(proposals, image_index, gt_boxes, gt_classes, gt_image_index,
                        num_classes):
    """Each proposal's overlap with the ground truth of its own image, image by image.

    Returns ``(max_iou (P, num_classes), best (P,), best_iou (P,))``: the best IoU with a
    ground truth of each class (0 where the image has none), and the index into ``gt_boxes``
    of the best-overlapping ground truth of any class with that IoU (−1 and 0 for an image
    without ground truth; the first on ties). Memory stays at one image's proposals × its
    boxes: a (P, G) matrix over the whole training split (100k proposals × 2.5k boxes on
    ``shapes``) would need gigabytes per float64 temporary.
    """
    proposals, gt_boxes = np.asarray(proposals), np.asarray(gt_boxes)
    image_index, gt_image_index = np.asarray(image_index), np.asarray(gt_image_index)
    gt_classes = np.asarray(gt_classes, int)
    max_iou = np.zeros((len(proposals), num_classes))
    best, best_iou = np.full(len(proposals), -1), np.zeros(len(proposals))
    p_order = np.argsort(image_index, kind="stable")
    g_order = np.argsort(gt_image_index, kind="stable")
    p_sorted, g_sorted = image_index[p_order], gt_image_index[g_order]
    for image in np.unique(gt_image_index):
        ps = p_order[np.searchsorted(p_sorted, image):np.searchsorted(p_sorted, image, "right")]
        gs = g_order[np.searchsorted(g_sorted, image):np.searchsorted(g_sorted, image, "right")]
        if len(ps) == 0:
            continue
        iou = box_iou_np(proposals[ps], gt_boxes[gs])  # (p, g) of this image
        k = iou.argmax(axis=1)
        best[ps], best_iou[ps] = gs[k], iou[np.arange(len(ps)), k]
        for cls in np.unique(gt_classes[gs]):
            max_iou[ps, cls] = iou[:, gt_classes[gs] == cls].max(axis=1)
    return max_iou, best, best_iou


def fit_class_svms(gt_features, gt_classes, features, max_iou, num_classes, settings,
                   seed=0, log=None):
    """One SVM per class with hard negative mining.

    Args:
        gt_features: (G, d) features of the ground-truth boxes; gt_classes: (G,) 0-based.
        features: (P, d) features of the proposals; max_iou: (P, num_classes) each
            proposal's best IoU with a ground truth of each class (same image).
        settings: :func:`svm_settings`.

    Returns:
        ``(W (d, num_classes), b (num_classes,))``.
    """
    d = gt_features.shape[1]
    weights, biases = np.zeros((d, num_classes)), np.zeros(num_classes)
    rng = np.random.default_rng(seed)
    for cls in range(num_classes):
        positives = gt_features[gt_classes == cls]
        pool = np.flatnonzero(max_iou[:, cls] < settings["negative_iou"])
        if len(positives) == 0 or len(pool) == 0:
            biases[cls] = -10.0  # never fires: no training data for this class
            continue
        cache = rng.choice(pool, min(len(pool), settings["initial_negatives"]), replace=False)
        for round_ in range(settings["mining_rounds"] + 1):
            x = np.concatenate([positives, features[cache]])
            y = np.concatenate([np.ones(len(positives)), -np.ones(len(cache))])
            w, b = train_linear_svm(x, y, settings["svm_c"], settings["positive_weight"],
                                    settings["bias_scale"], settings["svm_epochs"],
                                    seed=seed + cls)
            if round_ == settings["mining_rounds"]:
                break
            scores = features[pool] @ w + b
            hard = pool[scores > -1.0]
            new = np.setdiff1d(hard, cache)
            if log:
                log(f"class {cls} round {round_}: {len(cache)} cached negatives, "
                    f"{len(new)} new hard ones")
            if len(new) == 0:
                break
            cache_scores = features[cache] @ w + b
            keep = cache[cache_scores >= -1.2]
            cache = np.concatenate([keep, new[:max(settings["initial_negatives"], 1)]])
        weights[:, cls], biases[cls] = w, b
    return weights, biases


def fit_box_regressors(features, proposals, gt_boxes, gt_classes, image_index, gt_image_index,
                       num_classes, settings, variances):
    """Class-specific ridge regressors from proposal features to ``encode_boxes`` deltas.

    Args:
        features: (P, d); proposals: (P, 4) normalized yxyx; image_index: (P,) image of each
            proposal; gt_boxes (G, 4), gt_classes (G,), gt_image_index (G,) likewise.

    Returns:
        ``(W (d, 4·num_classes), b (4·num_classes,))``, class k in columns ``4k .. 4k+3``
        (zero for a class without training pairs: its boxes stay as proposed).
    """
    from cnn_apps.ops import encode_boxes

    d = features.shape[1]
    weights, biases = np.zeros((d, 4 * num_classes)), np.zeros(4 * num_classes)
    _, best, best_iou = same_image_overlaps(proposals, image_index, gt_boxes, gt_classes,
                                            gt_image_index, num_classes)
    for cls in range(num_classes):
        chosen = np.flatnonzero((best_iou >= settings["regression_iou"])
                                & (gt_classes[best] == cls if len(gt_classes) else False))
        if len(chosen) < 2:
            continue
        targets = np.asarray(encode_boxes(gt_boxes[best[chosen]].astype(np.float32),
                                          proposals[chosen].astype(np.float32), variances))
        w, b = fit_ridge(features[chosen], targets, settings["ridge_lambda"])
        weights[:, 4 * cls:4 * cls + 4], biases[4 * cls:4 * cls + 4] = w, b
    return weights, biases
