"""The Inception family (survey S0 §3.1.5, §3.6.5, §5.1; lecture notes S2;
SEED_CHECKLIST AR-06..AR-10).

* ``googlenet`` — Inception v1 (Szegedy et al. 2015, Table 1), own implementation with
  ``InceptionModule(variant="v1")``: 7×7/2 conv 64 → 3×3/2 max-pool → LRN → 1×1 conv 64 → 3×3
  conv 192 → LRN → 3×3/2 max-pool → inception 3a, 3b → pool → 4a..4e → pool → 5a, 5b → global
  average pool (7×7 → 1×1) → dropout 0.4 → FC softmax. Module widths (1×1, 3×3 reduce, 3×3,
  5×5 reduce, 5×5, pool proj) as in ``_GOOGLENET_MODULES``. ``aux_heads=True`` adds the two
  auxiliary classifiers on 4a and 4d (5×5/3 average pool → 1×1 conv 128 → FC 1024 → dropout 0.7
  → FC softmax): ``create("googlenet", num_classes=N, aux_heads=True)`` then returns a dict
  ``{"predictions", "aux1", "aux2"}`` (train with loss weights 1, 0.3, 0.3; use
  ``predictions`` at inference). 6,998,552 parameters at 1000 classes without the auxiliary
  heads (paper table, biases included; torchvision's 6,624,904 differs: BN and a 3×3 "5×5").
* ``inception_v2`` — BN-Inception (Ioffe & Szegedy 2015, Figure 5): BN after every conv, each
  5×5 replaced by two 3×3 (``InceptionModule(variant="v2")``), stride-2 modules 3c and 4e
  (3×3/2 and double-3×3/2 branches + max-pool pass-through). Figure 5 prints output depths for
  4c-4e that disagree with its own filter columns; the filters are followed (608, 608, 1056).
  The stem uses a plain 7×7 conv (the paper's depth-multiplier-8 separable conv1 is a cost
  trick, not part of the module design). Head: global average pool → FC softmax;
  11,285,224 trainable parameters at 1000 classes (the Figure 5 table as a formula).
* ``inception_v3`` — wraps ``keras.applications.InceptionV3`` (299×299; 1×7/7×1
  factorisation; 23,851,784 parameters incl. BN statistics).
* ``inception_v4`` — own implementation of Szegedy et al. 2016 (Figs. 3-9): stem, 4×Inception-A,
  Reduction-A (k, l, m, n = 192, 224, 256, 384), 7×Inception-B, Reduction-B, 3×Inception-C, 8×8
  average pool → dropout 0.2 → FC softmax; every conv is conv → BN → ReLU; 299×299 input,
  42,679,816 trainable parameters at 1000 classes (≈42.7M).
* ``inception_resnet_v2`` — wraps ``keras.applications.InceptionResNetV2`` (55,873,736).

Feature levels are the deepest maps at strides 4/8/16/32 (stem end, last module of each grid).
BN layers use batch statistics with ``training=True`` and moving averages at inference; dropout
is active only in training.

Example::

    model = cnn_apps.backbones.create("googlenet", num_classes=10, aux_heads=True)
    outputs = model(np.zeros((1, 224, 224, 3)))      # {"predictions", "aux1", "aux2"}
    feats = cnn_apps.backbones.create("inception_v4", features_only=True)
"""

import keras

from cnn_apps.backbones.keras_apps import _wrap, final_map, stem_end
from cnn_apps.backbones.registry import BackboneGraph, global_pool_head, register_backbone
from cnn_apps.layers.inception import InceptionModule
from cnn_apps.layers.regularization import LocalResponseNormalization

# name: (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj) -- Szegedy et al. 2015, Table 1.
_GOOGLENET_MODULES = {
    "3a": (64, 96, 128, 16, 32, 32), "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64), "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64), "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128), "5b": (384, 192, 384, 48, 128, 128),
}


def _googlenet_lrn(name):
    # Caffe's GoogLeNet LRN: local_size 5, alpha 1e-4 in Caffe's alpha/n convention, k = 1.
    return LocalResponseNormalization(depth_radius=2, bias=1.0, alpha=1e-4 / 5, beta=0.75,
                                      name=name)


def _aux_classifier(x, num_classes, name):
    x = keras.layers.AveragePooling2D(5, strides=3, name=f"{name}_pool")(x)
    x = keras.layers.Conv2D(128, 1, activation="relu", name=f"{name}_conv")(x)
    x = keras.layers.Flatten(name=f"{name}_flatten")(x)
    x = keras.layers.Dense(1024, activation="relu", name=f"{name}_fc")(x)
    x = keras.layers.Dropout(0.7, name=f"{name}_dropout")(x)
    return keras.layers.Dense(num_classes, activation="softmax", name=name, dtype="float32")(x)


def googlenet_head(feature_map, num_classes, graph=None):
    """GAP → dropout 0.4 → FC softmax; plus the auxiliary classifiers when the backbone was
    built with ``aux_heads=True`` (then a dict ``{"predictions", "aux1", "aux2"}``)."""
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(feature_map)
    x = keras.layers.Dropout(0.4, name="dropout")(x)
    predictions = keras.layers.Dense(num_classes, activation="softmax", name="predictions",
                                     dtype="float32")(x)
    aux_sources = (graph.extras if graph is not None else {}).get("aux_sources")
    if aux_sources is None:
        return predictions
    return {"predictions": predictions,
            "aux1": _aux_classifier(aux_sources[0], num_classes, "aux1"),
            "aux2": _aux_classifier(aux_sources[1], num_classes, "aux2")}


@register_backbone("googlenet", default_input_shape=(224, 224, 3), head=googlenet_head,
                   preprocessing="caffe", min_input_size=32,
                   description="GoogLeNet / Inception v1 (9 inception modules, GAP; 7.0M "
                               "params, +aux heads optional)")
def googlenet(inputs, imagenet=False, aux_heads=False):
    if not isinstance(aux_heads, bool):
        raise ValueError(f"googlenet: aux_heads must be True or False, got {aux_heads!r}")
    small = [side for side in inputs.shape[1:3] if side is not None and side < 65]
    if aux_heads and small:
        # 4a is at stride 16; the auxiliary 5×5/3 average pool needs a >= 5×5 map there.
        raise ValueError("googlenet: aux_heads=True needs inputs of at least 65 pixels per "
                         f"side (a >= 5x5 map at inception 4a), got {tuple(inputs.shape[1:])}")
    x = keras.layers.Conv2D(64, 7, strides=2, padding="same", activation="relu",
                            name="conv1")(inputs)
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
    x = _googlenet_lrn("norm1")(x)
    x = keras.layers.Conv2D(64, 1, activation="relu", name="conv2_reduce")(x)
    x = keras.layers.Conv2D(192, 3, padding="same", activation="relu", name="conv2")(x)
    norm2 = _googlenet_lrn("norm2")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool2")(norm2)
    maps = {}
    for name, widths in _GOOGLENET_MODULES.items():
        if name in ("4a", "5a"):
            x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name=f"pool{name[0]}")(x)
        x = maps[name] = InceptionModule(*widths, variant="v1", name=f"inception_{name}")(x)
    extras = {"aux_sources": (maps["4a"], maps["4d"])} if aux_heads else {}
    return BackboneGraph(output=x, features={"P2": norm2, "P3": maps["3b"], "P4": maps["4e"],
                                             "P5": maps["5b"]}, extras=extras)


def _conv_bn(x, filters, kernel, name, strides=1, padding="same"):
    """conv (no bias) → BN → ReLU: the unit of BN-Inception and Inception-v4."""
    x = keras.layers.Conv2D(filters, kernel, strides=strides, padding=padding, use_bias=False,
                            name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=1e-3, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def _concat(branches, name):
    return keras.layers.Concatenate(name=name)(branches)


# BN-Inception modules, Ioffe & Szegedy 2015 Figure 5: (1x1, 3x3 reduce, 3x3, double 3x3
# reduce, double 3x3, pool proj, pool type); stride-2 modules list (3x3 reduce, 3x3, double
# reduce, double 3x3).
_BN_INCEPTION_MODULES = {
    "3a": (64, 64, 64, 64, 96, 32, "avg"), "3b": (64, 64, 96, 64, 96, 64, "avg"),
    "3c": (128, 160, 64, 96),
    "4a": (224, 64, 96, 96, 128, 128, "avg"), "4b": (192, 96, 128, 96, 128, 128, "avg"),
    "4c": (160, 128, 160, 128, 160, 128, "avg"), "4d": (96, 128, 192, 160, 192, 128, "avg"),
    "4e": (128, 192, 192, 256),
    "5a": (352, 192, 320, 160, 224, 128, "avg"), "5b": (352, 192, 320, 192, 224, 128, "max"),
}


def _bn_inception_reduction(x, widths, name):
    reduce3, width3, reduce_d, width_d = widths
    a = _conv_bn(x, reduce3, 1, f"{name}_b1_reduce")
    a = _conv_bn(a, width3, 3, f"{name}_b1_3x3", strides=2)
    b = _conv_bn(x, reduce_d, 1, f"{name}_b2_reduce")
    b = _conv_bn(b, width_d, 3, f"{name}_b2_3x3a")
    b = _conv_bn(b, width_d, 3, f"{name}_b2_3x3b", strides=2)
    c = keras.layers.MaxPooling2D(3, strides=2, padding="same", name=f"{name}_pool")(x)
    return _concat([a, b, c], name)


@register_backbone("inception_v2", default_input_shape=(224, 224, 3), head=global_pool_head,
                   preprocessing="caffe", min_input_size=32,
                   description="Inception v2 = BN-Inception (5x5 -> two 3x3, BN; 11.3M params)")
def inception_v2(inputs, imagenet=False):
    x = _conv_bn(inputs, 64, 7, "conv1", strides=2)
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
    x = _conv_bn(x, 64, 1, "conv2_reduce")
    conv2 = _conv_bn(x, 192, 3, "conv2")
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool2")(conv2)
    maps = {}
    for name, widths in _BN_INCEPTION_MODULES.items():
        if len(widths) == 4:
            x = _bn_inception_reduction(x, widths, f"inception_{name}")
        else:
            x = InceptionModule(*widths[:6], variant="v2", pool_type=widths[6],
                                use_batch_norm=True, name=f"inception_{name}")(x)
        maps[name] = x
    return BackboneGraph(output=x, features={"P2": conv2, "P3": maps["3b"], "P4": maps["4d"],
                                             "P5": maps["5b"]})


# ----------------------------------------------------------------------------- Inception-v4
def _v4_stem(x):
    x = _conv_bn(x, 32, 3, "stem_conv1", strides=2, padding="valid")
    x = _conv_bn(x, 32, 3, "stem_conv2", padding="valid")
    x = _conv_bn(x, 64, 3, "stem_conv3")
    x = _concat([keras.layers.MaxPooling2D(3, strides=2, name="stem_pool1")(x),
                 _conv_bn(x, 96, 3, "stem_conv4", strides=2, padding="valid")], "stem_mixed1")
    a = _conv_bn(x, 64, 1, "stem_b1_1x1")
    a = _conv_bn(a, 96, 3, "stem_b1_3x3", padding="valid")
    b = _conv_bn(x, 64, 1, "stem_b2_1x1")
    b = _conv_bn(b, 64, (7, 1), "stem_b2_7x1")
    b = _conv_bn(b, 64, (1, 7), "stem_b2_1x7")
    b = _conv_bn(b, 96, 3, "stem_b2_3x3", padding="valid")
    stride4 = _concat([a, b], "stem_mixed2")
    x = _concat([_conv_bn(stride4, 192, 3, "stem_conv5", strides=2, padding="valid"),
                 keras.layers.MaxPooling2D(3, strides=2, name="stem_pool2")(stride4)],
                "stem_mixed3")
    return stride4, x


def _v4_inception_a(x, name):
    return InceptionModule(96, 64, 96, 64, 96, 96, variant="v2", pool_type="avg",
                           use_batch_norm=True, name=name)(x)


def _v4_reduction_a(x, name, k=192, l=224, m=256, n=384):
    a = _conv_bn(x, n, 3, f"{name}_b1_3x3", strides=2, padding="valid")
    b = _conv_bn(x, k, 1, f"{name}_b2_1x1")
    b = _conv_bn(b, l, 3, f"{name}_b2_3x3a")
    b = _conv_bn(b, m, 3, f"{name}_b2_3x3b", strides=2, padding="valid")
    c = keras.layers.MaxPooling2D(3, strides=2, name=f"{name}_pool")(x)
    return _concat([a, b, c], name)


def _v4_inception_b(x, name):
    a = _conv_bn(x, 384, 1, f"{name}_b1_1x1")
    b = _conv_bn(x, 192, 1, f"{name}_b2_1x1")
    b = _conv_bn(b, 224, (1, 7), f"{name}_b2_1x7")
    b = _conv_bn(b, 256, (7, 1), f"{name}_b2_7x1")
    c = _conv_bn(x, 192, 1, f"{name}_b3_1x1")
    for i, (width, kernel) in enumerate(((192, (7, 1)), (224, (1, 7)), (224, (7, 1)),
                                         (256, (1, 7)))):
        c = _conv_bn(c, width, kernel, f"{name}_b3_{kernel[0]}x{kernel[1]}_{i}")
    d = keras.layers.AveragePooling2D(3, strides=1, padding="same", name=f"{name}_pool")(x)
    d = _conv_bn(d, 128, 1, f"{name}_b4_1x1")
    return _concat([a, b, c, d], name)


def _v4_reduction_b(x, name):
    a = _conv_bn(x, 192, 1, f"{name}_b1_1x1")
    a = _conv_bn(a, 192, 3, f"{name}_b1_3x3", strides=2, padding="valid")
    b = _conv_bn(x, 256, 1, f"{name}_b2_1x1")
    b = _conv_bn(b, 256, (1, 7), f"{name}_b2_1x7")
    b = _conv_bn(b, 320, (7, 1), f"{name}_b2_7x1")
    b = _conv_bn(b, 320, 3, f"{name}_b2_3x3", strides=2, padding="valid")
    c = keras.layers.MaxPooling2D(3, strides=2, name=f"{name}_pool")(x)
    return _concat([a, b, c], name)


def _v4_split(x, name):
    """The 1×3 | 3×1 pair both Inception-C factorised branches end in (256 each)."""
    return [_conv_bn(x, 256, (1, 3), f"{name}_1x3"), _conv_bn(x, 256, (3, 1), f"{name}_3x1")]


def _v4_inception_c(x, name):
    a = _conv_bn(x, 256, 1, f"{name}_b1_1x1")
    b = _v4_split(_conv_bn(x, 384, 1, f"{name}_b2_1x1"), f"{name}_b2_split")
    c = _conv_bn(x, 384, 1, f"{name}_b3_1x1")
    c = _conv_bn(c, 448, (3, 1), f"{name}_b3_3x1")
    c = _conv_bn(c, 512, (1, 3), f"{name}_b3_1x3")
    c = _v4_split(c, f"{name}_b3_split")
    d = keras.layers.AveragePooling2D(3, strides=1, padding="same", name=f"{name}_pool")(x)
    d = _conv_bn(d, 256, 1, f"{name}_b4_1x1")
    return _concat([a, *b, *c, d], name)


def inception_v4_head(feature_map, num_classes):
    """Average pool → dropout 0.2 (keep 0.8) → FC softmax (Szegedy et al. 2016 Fig. 9)."""
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(feature_map)
    x = keras.layers.Dropout(0.2, name="dropout")(x)
    return keras.layers.Dense(num_classes, activation="softmax", name="predictions",
                              dtype="float32")(x)


# Valid-padded stem and reductions: 75 pixels is the smallest side giving an 1×1 final grid.
@register_backbone("inception_v4", default_input_shape=(299, 299, 3), head=inception_v4_head,
                   preprocessing="tf", min_input_size=75,
                   description="Inception-v4, own implementation (stem, 4xA, 7xB, 3xC; 42.7M "
                               "params)")
def inception_v4(inputs, imagenet=False):
    stride4, x = _v4_stem(inputs)
    for i in range(4):
        x = _v4_inception_a(x, f"inception_a{i + 1}")
    stride8 = x
    x = _v4_reduction_a(x, "reduction_a")
    for i in range(7):
        x = _v4_inception_b(x, f"inception_b{i + 1}")
    stride16 = x
    x = _v4_reduction_b(x, "reduction_b")
    for i in range(3):
        x = _v4_inception_c(x, f"inception_c{i + 1}")
    return BackboneGraph(output=x, features={"P2": stride4, "P3": stride8, "P4": stride16,
                                             "P5": x})


# --------------------------------------------------------------- keras.applications wraps
register_backbone(
    "inception_v3", default_input_shape=(299, 299, 3), imagenet_weights=True,
    preprocessing="tf", min_input_size=75,
    description="Inception v3 (keras.applications; 1x7/7x1 factorisation; 23.9M params)",
)(_wrap(keras.applications.InceptionV3, {"P2": stem_end("mixed0"), "P3": "mixed2",
                                         "P4": "mixed7", "P5": "mixed10"}))

register_backbone(
    "inception_resnet_v2", default_input_shape=(299, 299, 3), imagenet_weights=True,
    preprocessing="tf", min_input_size=75,
    description="Inception-ResNet-v2 (keras.applications; residual Inception; 55.9M params)",
)(_wrap(keras.applications.InceptionResNetV2, {
    "P2": stem_end("mixed_5b"), "P3": "block35_10_ac", "P4": "block17_20_ac",
    "P5": final_map}))
