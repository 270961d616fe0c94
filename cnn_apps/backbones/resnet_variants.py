"""ResNet variants: pre-activation, wide, stochastic-depth and ResNeXt (survey S0 §3.6.5).

SEED_CHECKLIST AR-12 (pre-activation ResNet), AR-13 (Wide ResNet), AR-14 (stochastic-depth
ResNet), AR-20 (ResNeXt-50, named in lecture notes S2 only) and S-02..S-05, R-15. All are built
from :class:`cnn_apps.layers.ResidualBlock` (and :class:`StochasticDepth`); every convolution
is bias-free and followed (post-activation) or preceded (pre-activation) by BatchNormalization.

* ``preact_resnet18/34/50`` (He et al. 2016, "Identity mappings"): ``x_{l+1} = x_l + F(x_l)``
  with BN-ReLU-conv ordering inside F and no activation after the addition. Stem: 7×7/2 conv
  + 3×3/2 max-pool without BN (the first block pre-activates its input); stages of 2-2-2-2 /
  3-4-6-3 basic or 3-4-6-3 bottleneck blocks (64..512 filters, ×4 output for bottlenecks) with
  the stride on the first block of a stage; a final BN-ReLU closes the trunk. Head: GAP + FC.
* ``wide_resnet28_10`` / ``wide_resnet16_8`` (Zagoruyko & Komodakis 2016; S0: "decrease the
  depth and increase the width", CIFAR-10/100, SVHN): CIFAR net on 32×32 inputs, 3×3 conv(16)
  stem, three groups of N = (depth − 4)/6 pre-activation basic blocks with 16k, 32k, 64k
  filters (k = widening factor; strides 1, 2, 2), dropout between the two convs of a block
  (``dropout_rate``, 0.3 as in the paper's best CIFAR runs), final BN-ReLU, GAP (8×8) + FC.
  36,479,194 parameters for WRN-28-10 at 10 classes (paper: 36.5M).
* ``resnet_stochastic_depth`` (Huang et al. 2016; S0: "randomly drop a subset of layers and
  bypass them with the identity mapping"): the paper's CIFAR ResNet-110 — 3×3 conv(16) stem
  and 3 stages of 18 post-activation basic blocks (16/32/64 filters), identity shortcuts with
  stride-2 subsampling and zero-padded channels where the shape changes (He et al.'s
  "option A"), GAP + FC; block l of L = 54 keeps its residual branch with probability
  ``p_l = 1 − (l / L)(1 − p_L)``, linearly from 1 down to ``p_L = 0.5`` (``final_survival``).
  Training drops whole residual branches per example; inference scales them by p_l.
* ``resnext50_32x4d`` (Xie et al. 2017): the ResNet-50 layout with bottleneck blocks whose 3×3
  convolution is grouped (cardinality 32, 4 channels per group: widths 128..1024, output
  256..2048), stride on the 3×3 as in torchvision; 25,028,904 parameters at 1000 classes.

Feature levels are named by their real stride: P2..P5 for the ImageNet nets, P0..P2
(strides 1, 2, 4) for the CIFAR nets. In training mode BN uses batch statistics and dropout /
stochastic depth sample; inference is deterministic.

Example:
    >>> model = create("wide_resnet28_10", num_classes=10)          # 32×32×3 input
    >>> model = create("resnet_stochastic_depth", final_survival=0.5, seed=1)
    >>> pyramid = create("resnext50_32x4d", features_only=True)     # P2..P5
"""

import keras
from keras import ops

from cnn_apps.backbones.registry import BackboneGraph, register_backbone
from cnn_apps.layers import ResidualBlock, StochasticDepth

_BN = {"momentum": 0.9, "epsilon": 1e-5}
_BN_KW = {"bn_momentum": 0.9, "bn_epsilon": 1e-5}    # the same, as ResidualBlock arguments


def _positive_int(value, name, owner):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive integer, got {value!r}")
    return value


def _imagenet_stem(inputs, width, normalize):
    """7×7/2 conv (+ BN-ReLU when ``normalize``) and 3×3/2 max-pool: stride 4."""
    x = keras.layers.Conv2D(width, 7, strides=2, padding="same", use_bias=False,
                            name="stem_conv")(inputs)
    if normalize:
        x = keras.layers.BatchNormalization(name="stem_bn", **_BN)(x)
        x = keras.layers.ReLU(name="stem_relu")(x)
    return keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)


def _cifar_stem(inputs, width):
    return keras.layers.Conv2D(width, 3, padding="same", use_bias=False,
                               name="stem_conv")(inputs)


def _final_bn_relu(x):
    x = keras.layers.BatchNormalization(name="post_bn", **_BN)(x)
    return keras.layers.ReLU(name="post_relu")(x)


def _stages(x, blocks_per_stage, widths, first_stride, block_kwargs, first_stage_stride=1):
    """Stacks ResidualBlocks; returns (output, {level: stage output})."""
    features = {}
    stride = first_stride
    for stage, (num_blocks, filters) in enumerate(zip(blocks_per_stage, widths)):
        stage_stride = first_stage_stride if stage == 0 else 2
        stride *= stage_stride
        for block in range(num_blocks):
            x = ResidualBlock(filters, strides=stage_stride if block == 0 else 1,
                              name=f"stage{stage + 1}_block{block + 1}", **block_kwargs)(x)
        features[f"P{stride.bit_length() - 1}"] = x
    return x, features


# ----------------------------------------------------------------------------- pre-activation
def _preact_resnet(inputs, blocks, bottleneck, width):
    width = _positive_int(width, "width", "preact_resnet")
    x = _imagenet_stem(inputs, width, normalize=False)
    x, features = _stages(x, blocks, [width * 2 ** s for s in range(4)], 4,
                          {"bottleneck": bottleneck, "preactivation": True, **_BN_KW})
    x = _final_bn_relu(x)
    features["P5"] = x
    return BackboneGraph(output=x, features=features)


@register_backbone("preact_resnet18", default_input_shape=(224, 224, 3),
                   description="Pre-activation ResNet-18 (BN-ReLU-conv basic blocks; 11.7M params)")
def preact_resnet18(inputs, imagenet=False, width=64):
    return _preact_resnet(inputs, (2, 2, 2, 2), False, width)


@register_backbone("preact_resnet34", default_input_shape=(224, 224, 3),
                   description="Pre-activation ResNet-34 (BN-ReLU-conv basic blocks; 21.8M params)")
def preact_resnet34(inputs, imagenet=False, width=64):
    return _preact_resnet(inputs, (3, 4, 6, 3), False, width)


@register_backbone("preact_resnet50", default_input_shape=(224, 224, 3),
                   description="Pre-activation ResNet-50 (BN-ReLU-conv bottlenecks; 25.6M params)")
def preact_resnet50(inputs, imagenet=False, width=64):
    return _preact_resnet(inputs, (3, 4, 6, 3), True, width)


# ----------------------------------------------------------------------------- wide ResNet
def wide_resnet(inputs, depth, widen_factor, dropout_rate=0.3):
    """WRN-depth-k graph for 32×32 inputs (Zagoruyko & Komodakis 2016)."""
    depth = _positive_int(depth, "depth", "wide_resnet")
    if depth < 10 or (depth - 4) % 6:
        raise ValueError(f"wide_resnet: depth must be 6·N + 4 with N >= 1 (10, 16, 22, 28, "
                         f"...), got {depth}")
    widen_factor = _positive_int(widen_factor, "widen_factor", "wide_resnet")
    if not 0.0 <= float(dropout_rate) < 1.0:
        raise ValueError(f"wide_resnet: dropout_rate must be in [0, 1), got {dropout_rate!r}")
    n = (depth - 4) // 6
    x = _cifar_stem(inputs, 16)
    x, features = _stages(x, (n, n, n), [16 * widen_factor * 2 ** g for g in range(3)], 1,
                          {"preactivation": True, "dropout_rate": float(dropout_rate), **_BN_KW})
    x = _final_bn_relu(x)
    features["P2"] = x
    return BackboneGraph(output=x, features=features)


@register_backbone("wide_resnet28_10", default_input_shape=(32, 32, 3), min_input_size=8,
                   description="Wide ResNet-28-10, CIFAR (pre-act blocks, 160-640 filters; "
                               "36.5M params)")
def wide_resnet28_10(inputs, imagenet=False, dropout_rate=0.3):
    return wide_resnet(inputs, 28, 10, dropout_rate)


@register_backbone("wide_resnet16_8", default_input_shape=(32, 32, 3), min_input_size=8,
                   description="Wide ResNet-16-8, CIFAR (pre-act blocks, 128-512 filters; "
                               "11.0M params)")
def wide_resnet16_8(inputs, imagenet=False, dropout_rate=0.3):
    return wide_resnet(inputs, 16, 8, dropout_rate)


# ----------------------------------------------------------------------------- stochastic depth
@keras.saving.register_keras_serializable(package="cnn_apps")
class SubsampledZeroPadShortcut(keras.layers.Layer):
    """Parameter-free shortcut ``x[:, ::s, ::s, :]`` zero-padded to ``channels`` channels.

    He et al.'s "option A" identity shortcut for blocks that halve the map and widen it, as
    used by the CIFAR ResNets and Huang et al.'s stochastic-depth ResNet-110 (survey S0
    §3.6.5): the first C input channels pass through unchanged, the new ones are zero.
    Deterministic; no weights.

    Args:
        channels: output channels (>= input channels).
        strides: spatial subsampling step s.

    Example:
        >>> y = SubsampledZeroPadShortcut(32, strides=2)(keras.ops.ones((2, 8, 8, 16)))
        >>> y.shape                                                    # (2, 4, 4, 32)
    """

    def __init__(self, channels, strides=2, **kwargs):
        super().__init__(**kwargs)
        self.channels = _positive_int(channels, "channels", "SubsampledZeroPadShortcut")
        self.strides = _positive_int(strides, "strides", "SubsampledZeroPadShortcut")

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] is None or input_shape[-1] > self.channels:
            raise ValueError(f"SubsampledZeroPadShortcut: expected (batch, H, W, C) with known "
                             f"C <= channels={self.channels}, got {tuple(input_shape)}")
        self.built = True

    def call(self, x):
        s = self.strides
        x = x[:, ::s, ::s, :]
        return ops.pad(x, ((0, 0), (0, 0), (0, 0), (0, self.channels - x.shape[-1])))

    def compute_output_shape(self, input_shape):
        s = self.strides
        dims = [None if d is None else -(-d // s) for d in input_shape[1:3]]
        return (input_shape[0], *dims, self.channels)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "strides": self.strides}


def _sd_transition_block(x, filters, survival, seed, name):
    """Down-sampling basic block with an option-A shortcut, merged by StochasticDepth."""
    y = keras.layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False,
                            name=f"{name}_conv1")(x)
    y = keras.layers.BatchNormalization(name=f"{name}_bn1", **_BN)(y)
    y = keras.layers.ReLU(name=f"{name}_relu1")(y)
    y = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    y = keras.layers.BatchNormalization(name=f"{name}_bn2", **_BN)(y)
    shortcut = SubsampledZeroPadShortcut(filters, 2, name=f"{name}_shortcut")(x)
    y = StochasticDepth(survival, seed=seed, name=f"{name}_stochastic_depth")([shortcut, y])
    return keras.layers.ReLU(name=f"{name}_out")(y)


@register_backbone("resnet_stochastic_depth", default_input_shape=(32, 32, 3), min_input_size=8,
                   description="Stochastic-depth ResNet-110, CIFAR (Huang et al.; survival "
                               "1 -> 0.5; 1.7M params)")
def resnet_stochastic_depth(inputs, imagenet=False, depth=110, final_survival=0.5, seed=None):
    """Huang et al.'s CIFAR ResNet (depth = 6n + 2) with linearly decaying survival."""
    depth = _positive_int(depth, "depth", "resnet_stochastic_depth")
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"resnet_stochastic_depth: depth must be 6·n + 2 with n >= 1 (8, 20, "
                         f"56, 110, ...), got {depth}")
    final_survival = float(final_survival)
    if not 0.0 < final_survival <= 1.0:
        raise ValueError(f"resnet_stochastic_depth: final_survival must be in (0, 1], got "
                         f"{final_survival}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ValueError(f"resnet_stochastic_depth: seed must be None or an integer >= 0, got "
                         f"{seed!r}")
    n = (depth - 2) // 6
    total = 3 * n
    x = _cifar_stem(inputs, 16)
    x = keras.layers.BatchNormalization(name="stem_bn", **_BN)(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    features, block_index = {}, 0
    for stage, filters in enumerate((16, 32, 64)):
        for block in range(n):
            block_index += 1
            survival = 1.0 - block_index / total * (1.0 - final_survival)
            block_seed = None if seed is None else seed + block_index
            name = f"stage{stage + 1}_block{block + 1}"
            if stage > 0 and block == 0:
                x = _sd_transition_block(x, filters, survival, block_seed, name)
            else:
                x = ResidualBlock(filters, survival_probability=survival, seed=block_seed,
                                  name=name, **_BN_KW)(x)
        features[f"P{stage}"] = x
    return BackboneGraph(output=x, features=features)


# ----------------------------------------------------------------------------- ResNeXt
@register_backbone("resnext50_32x4d", default_input_shape=(224, 224, 3),
                   description="ResNeXt-50 32x4d (grouped 3x3 bottlenecks, cardinality 32; "
                               "25.0M params)")
def resnext50_32x4d(inputs, imagenet=False, cardinality=32, group_width=4):
    cardinality = _positive_int(cardinality, "cardinality", "resnext50_32x4d")
    group_width = _positive_int(group_width, "group_width", "resnext50_32x4d")
    x = _imagenet_stem(inputs, 64, normalize=True)
    # Stage widths: cardinality·group_width·2^s (128..1024 for 32x4d); outputs 256·2^s.
    widths = [cardinality * group_width * 2 ** s for s in range(4)]
    expansion = 256 // (cardinality * group_width)
    if expansion < 1 or 256 % (cardinality * group_width):
        raise ValueError(f"resnext50_32x4d: cardinality·group_width must divide 256, got "
                         f"{cardinality}·{group_width}")
    x, features = _stages(x, (3, 4, 6, 3), widths, 4,
                          {"bottleneck": True, "groups": cardinality, "expansion": expansion,
                           **_BN_KW})
    return BackboneGraph(output=x, features=features)
