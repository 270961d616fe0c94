"""Small mobile backbones: SqueezeNet 1.1 and ShuffleNet V2 1.0×.

Neither net is in the seeds (SEED_CHECKLIST §13.2 "requested/typical but NOT in any seed" and
§17); they belong to the efficient-network line the survey discusses in S0 §4 (fast
processing: fewer multiply-adds, structured/grouped convolutions) and lecture notes S2 name
next to MobileNet (AR-21). The specs below follow the papers as realised by torchvision, whose
parameter counts the tests reproduce exactly.

* ``squeezenet1_1`` (Iandola et al. 2016, v1.1 layout): 3×3/2 conv(64) → max-pool → Fire(16,
  64, 64) ×2 → max-pool → Fire(32, 128, 128) ×2 → max-pool → Fire(48, 192, 192) ×2 → Fire(64,
  256, 256) ×2. A Fire module squeezes with a 1×1 conv (s filters) and expands with parallel
  1×1 and 3×3 convs (e1 + e3 filters, concatenated); all convs have biases and ReLU. The
  max-pools are 3×3/2 with "ceil" rounding (done as a one-pixel zero pad at the bottom/right,
  exact because the inputs are ReLU outputs >= 0). Head (the paper's): dropout 0.5 → 1×1
  conv(classes) → ReLU → GAP → softmax. 1,235,496 parameters at 1000 classes. Levels P2..P4.
* ``shufflenet_v2`` (Ma et al. 2018, 1.0×): 3×3/2 conv(24)-BN-ReLU → 3×3/2 max-pool → stages
  of 4, 8, 4 units with 116, 232, 464 channels → 1×1 conv(1024)-BN-ReLU → GAP → FC. A stride-1
  unit splits the channels in half, passes one half through and sends the other through
  1×1 conv-BN-ReLU → 3×3 depthwise conv-BN → 1×1 conv-BN-ReLU; a stride-2 unit feeds the whole
  input to that branch and to a depthwise 3×3/2-BN → 1×1-BN-ReLU branch. Branch outputs are
  concatenated and channel-shuffled (2 groups). 2,278,604 parameters at 1000 classes.
  Levels P2..P5 (P2 = the max-pool output).

Training and inference differ only through BN statistics and SqueezeNet's head dropout.

Example:
    >>> model = create("squeezenet1_1", num_classes=1000)
    >>> pyramid = create("shufflenet_v2", features_only=True)          # P2..P5
"""

import keras
from keras import ops

from cnn_apps.backbones.registry import BackboneGraph, register_backbone

_BN = {"momentum": 0.9, "epsilon": 1e-5}


# ----------------------------------------------------------------------------- SqueezeNet
def _ceil_max_pool(x, name):
    """3×3/2 max-pool with ceil rounding; zero padding is exact after a ReLU (x >= 0)."""
    x = keras.layers.ZeroPadding2D(((0, 1), (0, 1)), name=f"{name}_pad")(x)
    return keras.layers.MaxPooling2D(3, strides=2, name=name)(x)


def _fire(x, squeeze, expand1x1, expand3x3, name):
    s = keras.layers.Conv2D(squeeze, 1, activation="relu", name=f"{name}_squeeze")(x)
    e1 = keras.layers.Conv2D(expand1x1, 1, activation="relu", name=f"{name}_expand1x1")(s)
    e3 = keras.layers.Conv2D(expand3x3, 3, padding="same", activation="relu",
                             name=f"{name}_expand3x3")(s)
    return keras.layers.Concatenate(name=f"{name}_concat")([e1, e3])


def squeezenet_head(feature_map, num_classes, dropout_rate=0.5):
    """SqueezeNet's classifier: dropout → 1×1 conv(classes) → ReLU → GAP → softmax."""
    x = keras.layers.Dropout(dropout_rate, name="head_dropout")(feature_map)
    x = keras.layers.Conv2D(num_classes, 1, activation="relu", name="head_conv")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.layers.Activation("softmax", name="predictions", dtype="float32")(x)


@register_backbone("squeezenet1_1", default_input_shape=(224, 224, 3), head=squeezenet_head,
                   description="SqueezeNet 1.1 (Fire modules, conv head; 1.24M params)")
def squeezenet1_1(inputs, imagenet=False):
    x = keras.layers.Conv2D(64, 3, strides=2, activation="relu", name="conv1")(inputs)
    x = _ceil_max_pool(x, "pool1")
    x = _fire(x, 16, 64, 64, "fire2")
    p2 = x = _fire(x, 16, 64, 64, "fire3")
    x = _ceil_max_pool(x, "pool3")
    x = _fire(x, 32, 128, 128, "fire4")
    p3 = x = _fire(x, 32, 128, 128, "fire5")
    x = _ceil_max_pool(x, "pool5")
    for i, (s, e) in enumerate(((48, 192), (48, 192), (64, 256), (64, 256)), start=6):
        x = _fire(x, s, e, e, f"fire{i}")
    return BackboneGraph(output=x, features={"P2": p2, "P3": p3, "P4": x})


# ----------------------------------------------------------------------------- ShuffleNet V2
@keras.saving.register_keras_serializable(package="cnn_apps")
class ChannelShuffle(keras.layers.Layer):
    """Channel shuffle (ShuffleNet): reshape C to (groups, C/groups), transpose, flatten.

    Output channel ``j·groups + g`` is input channel ``g·(C/groups) + j``, so each group of the
    next grouped/split operation sees channels from every group of this one. Deterministic,
    no weights; any spatial size.

    Args:
        groups: number of channel groups (must divide C).

    Example:
        >>> y = ChannelShuffle(2)(keras.ops.reshape(keras.ops.arange(4.0), (1, 1, 1, 4)))
        >>> y[0, 0, 0]                                                   # [0, 2, 1, 3]
    """

    def __init__(self, groups=2, **kwargs):
        super().__init__(**kwargs)
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
            raise ValueError(f"ChannelShuffle: groups must be a positive integer, got {groups!r}")
        self.groups = groups

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] is None or input_shape[-1] % self.groups:
            raise ValueError(f"ChannelShuffle: expected (batch, H, W, C) with C divisible by "
                             f"groups={self.groups}, got {tuple(input_shape)}")
        self.built = True

    def call(self, x):
        shape = ops.shape(x)
        channels = x.shape[-1]
        y = ops.reshape(x, (shape[0], shape[1], shape[2], self.groups, channels // self.groups))
        y = ops.transpose(y, (0, 1, 2, 4, 3))
        return ops.reshape(y, (shape[0], shape[1], shape[2], channels))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "groups": self.groups}


def _conv_bn(x, filters, name, relu=True):
    x = keras.layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn", **_BN)(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _depthwise_bn(x, strides, name):
    x = keras.layers.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False,
                                     name=f"{name}_dwconv")(x)
    return keras.layers.BatchNormalization(name=f"{name}_dwbn", **_BN)(x)


@keras.saving.register_keras_serializable(package="cnn_apps")
class ChannelSplit(keras.layers.Layer):
    """Splits the channels into two halves ``[x[..., :C/2], x[..., C/2:]]`` (ShuffleNet V2).

    Deterministic, no weights. Needs an even, known channel count C.

    Example:
        >>> kept, processed = ChannelSplit()(keras.ops.ones((2, 8, 8, 16)))  # 8 + 8 channels
    """

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] is None or input_shape[-1] % 2:
            raise ValueError(f"ChannelSplit: expected (batch, H, W, C) with an even C, got "
                             f"{tuple(input_shape)}")
        self.built = True

    def call(self, x):
        half = x.shape[-1] // 2
        return [x[..., :half], x[..., half:]]

    def compute_output_shape(self, input_shape):
        half = tuple(input_shape[:-1]) + (input_shape[-1] // 2,)
        return [half, half]


def _shuffle_unit(x, out_channels, strides, name):
    half = out_channels // 2
    if strides == 1:
        kept, branch = ChannelSplit(name=f"{name}_split")(x)
    else:
        kept = _conv_bn(_depthwise_bn(x, strides, f"{name}_b1"), half, f"{name}_b1_pw")
        branch = x
    branch = _conv_bn(branch, half, f"{name}_b2_pw1")
    branch = _depthwise_bn(branch, strides, f"{name}_b2")
    branch = _conv_bn(branch, half, f"{name}_b2_pw2")
    x = keras.layers.Concatenate(name=f"{name}_concat")([kept, branch])
    return ChannelShuffle(2, name=f"{name}_shuffle")(x)


_SHUFFLENET_V2_1X = {"stage_units": (4, 8, 4), "stage_channels": (116, 232, 464),
                     "stem": 24, "last": 1024}


@register_backbone("shufflenet_v2", default_input_shape=(224, 224, 3),
                   description="ShuffleNet V2 1.0x (split/shuffle units, depthwise 3x3; "
                               "2.28M params)")
def shufflenet_v2(inputs, imagenet=False):
    spec = _SHUFFLENET_V2_1X
    x = keras.layers.Conv2D(spec["stem"], 3, strides=2, padding="same", use_bias=False,
                            name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="conv1_bn", **_BN)(x)
    x = keras.layers.ReLU(name="conv1_relu")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
    features = {"P2": x}
    for stage, (units, channels) in enumerate(zip(spec["stage_units"], spec["stage_channels"])):
        for unit in range(units):
            x = _shuffle_unit(x, channels, 2 if unit == 0 else 1,
                              f"stage{stage + 2}_unit{unit + 1}")
        features[f"P{stage + 3}"] = x
    x = _conv_bn(x, spec["last"], "conv5")
    features["P5"] = x
    return BackboneGraph(output=x, features=features)
