"""Highway CNN and Tiled CNN, small CIFAR-size backbones (32×32×3 default input).

* ``highway_cnn`` — survey S0 §3.6.5 (Srivastava et al.; SEED_CHECKLIST AR-17, S-01): every
  trunk layer is a convolutional highway layer
  ``y = H(x)·T(x) + x·(1 − T(x))``, ``H = ReLU(conv3×3(x))``, ``T = sigmoid(conv3×3(x) + b_T)``
  with ``b_T`` starting negative (−2) so the net first carries its input through
  (:class:`cnn_apps.layers.HighwayConv2D`). Highway layers keep the width, so the layout is:
  3×3 conv(32)-ReLU stem; three stages of 5 highway layers with 32, 64, 128 channels; between
  stages a 2×2 max-pool and a 1×1 conv-ReLU that widens the map. Head: GAP + FC. That is 19
  weight layers and 1.95M parameters at 10 classes, in the range of Srivastava et al.'s
  19-layer CIFAR-10 highway net (2.3M; the seed gives only the gate formula, so this exact
  layout is ours).
* ``tiled_cnn`` — survey S0 §3.1.1 (Le et al. 2010; SEED_CHECKLIST AR-25, V-01) with §3.2.1
  Lp pooling (P-05): "simple" units from a tiled convolution whose weights are untied inside a
  k×k tile (``TiledConv2D``, k = ``tile_size`` = 2, the seed's best on NORB and CIFAR-10; linear,
  as in Le et al.) and "complex" units from square-root (L2) pooling over 2×2 neighbourhoods,
  ``y = sqrt(Σ a²)`` (``LpPooling2D(p=2)``), which is what lets the net learn rotation/scale
  invariances. Three such stages with 32, 64, 128 maps (3×3 kernels), then GAP + FC.
  Le et al.'s TICA pre-training and local contrast normalization are not reproduced.

Feature levels are named by stride: highway P0..P2 (strides 1, 2, 4), tiled P1..P3 (2, 4, 8).
Both are deterministic at inference; training and inference compute the same function.

Example:
    >>> model = create("highway_cnn", num_classes=10)
    >>> model = create("tiled_cnn", num_classes=10, tile_size=2)
"""

import keras

from cnn_apps.backbones.registry import BackboneGraph, register_backbone
from cnn_apps.layers import HighwayConv2D, LpPooling2D, TiledConv2D


def _int_list(values, name, owner):
    values = tuple(values) if isinstance(values, (list, tuple)) else ()
    if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
        raise ValueError(f"{owner}: {name} must be a non-empty list of positive integers")
    return values


def _positive_int(value, name, owner):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive integer, got {value!r}")
    return value


@register_backbone("highway_cnn", default_input_shape=(32, 32, 3), min_input_size=8,
                   description="Highway CNN, CIFAR (3x5 HighwayConv2D layers, 32-128 ch; "
                               "1.95M params)")
def highway_cnn(inputs, imagenet=False, widths=(32, 64, 128), layers_per_stage=5,
                transform_bias=-2.0):
    widths = _int_list(widths, "widths", "highway_cnn")
    layers_per_stage = _positive_int(layers_per_stage, "layers_per_stage", "highway_cnn")
    if not float(transform_bias) < 0.0:
        raise ValueError(f"highway_cnn: transform_bias must be negative (carry behaviour at "
                         f"the start), got {transform_bias!r}")
    x = keras.layers.Conv2D(widths[0], 3, padding="same", activation="relu",
                            name="stem_conv")(inputs)
    features = {}
    for stage, width in enumerate(widths):
        if stage:
            x = keras.layers.MaxPooling2D(2, padding="same", name=f"stage{stage + 1}_pool")(x)
            x = keras.layers.Conv2D(width, 1, activation="relu",
                                    name=f"stage{stage + 1}_widen")(x)
        for layer in range(layers_per_stage):
            x = HighwayConv2D(3, activation="relu", transform_bias=float(transform_bias),
                              kernel_initializer="he_normal",
                              name=f"stage{stage + 1}_highway{layer + 1}")(x)
        features[f"P{stage}"] = x
    return BackboneGraph(output=x, features=features)


@register_backbone("tiled_cnn", default_input_shape=(32, 32, 3), min_input_size=8,
                   description="Tiled CNN, CIFAR (TiledConv2D k=2 + L2 pooling x3; "
                               "0.37M params at 10 classes)")
def tiled_cnn(inputs, imagenet=False, filters=(32, 64, 128), tile_size=2, kernel_size=3):
    filters = _int_list(filters, "filters", "tiled_cnn")
    tile_size = _positive_int(tile_size, "tile_size", "tiled_cnn")
    kernel_size = _positive_int(kernel_size, "kernel_size", "tiled_cnn")
    x, features = inputs, {}
    for stage, f in enumerate(filters):
        x = TiledConv2D(f, kernel_size, tile_size=tile_size, padding="same",
                        name=f"stage{stage + 1}_tiled_conv")(x)
        x = LpPooling2D(p=2, pool_size=2, padding="same", name=f"stage{stage + 1}_l2_pool")(x)
        features[f"P{stage + 1}"] = x
    return BackboneGraph(output=x, features=features)
