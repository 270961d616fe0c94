"""ResNet-18 and ResNet-34 (He et al. 2016; survey S0 §3.6.5, SEED_CHECKLIST AR-11, S-03).

Own implementation with basic blocks: 7×7/2 conv stem + 3×3/2 max-pool, four stages of basic
blocks (two 3×3 convs with BN; 2-2-2-2 blocks for ResNet-18, 3-4-6-3 for ResNet-34) with
64/128/256/512 filters, projection shortcuts (1×1 conv + BN, "option B") where the shape
changes, then global average pooling + FC. At 1000 classes: 11,689,512 (ResNet-18) and
21,797,672 (ResNet-34) trainable parameters, torchvision's figures for the same architectures.
Feature levels P2..P5 are the outputs of the four stages (strides 4, 8, 16, 32).

Example:
    >>> model = create("resnet34", num_classes=10)         # 224×224 input, GAP + FC head
    >>> pyramid = create("resnet34", features_only=True)   # {"P2": ..., "P5": ...}
"""

import keras

from cnn_apps.backbones.registry import BackboneGraph, global_pool_head, register_backbone

_BN = {"momentum": 0.9, "epsilon": 1e-5}


def _basic_block(x, filters, strides, name):
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = keras.layers.Conv2D(filters, 1, strides=strides, use_bias=False,
                                       name=f"{name}_proj_conv")(x)
        shortcut = keras.layers.BatchNormalization(name=f"{name}_proj_bn", **_BN)(shortcut)
    y = keras.layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False,
                            name=f"{name}_conv1")(x)
    y = keras.layers.BatchNormalization(name=f"{name}_bn1", **_BN)(y)
    y = keras.layers.ReLU(name=f"{name}_relu1")(y)
    y = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    y = keras.layers.BatchNormalization(name=f"{name}_bn2", **_BN)(y)
    y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def basic_resnet(inputs, blocks_per_stage, width=64, stem="imagenet"):
    """A basic-block ResNet graph; ``stem="imagenet"`` (7×7/2 + max-pool) or ``"small"``
    (3×3/1 conv, no pool: for 32×32 inputs, as in the CIFAR ResNets)."""
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"resnet: width must be a positive integer, got {width!r}")
    if stem == "imagenet":
        x = keras.layers.Conv2D(width, 7, strides=2, padding="same", use_bias=False,
                                name="stem_conv")(inputs)
        x = keras.layers.BatchNormalization(name="stem_bn", **_BN)(x)
        x = keras.layers.ReLU(name="stem_relu")(x)
        x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
        first_stride = 4
    elif stem == "small":
        x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name="stem_conv")(inputs)
        x = keras.layers.BatchNormalization(name="stem_bn", **_BN)(x)
        x = keras.layers.ReLU(name="stem_relu")(x)
        first_stride = 1
    else:
        raise ValueError(f"resnet: stem must be 'imagenet' or 'small', got '{stem}'")
    features = {}
    for stage, num_blocks in enumerate(blocks_per_stage):
        filters = width * 2 ** stage
        for block in range(num_blocks):
            strides = 2 if (stage > 0 and block == 0) else 1
            x = _basic_block(x, filters, strides, name=f"stage{stage + 1}_block{block + 1}")
        level = {4: 2, 8: 3, 16: 4, 32: 5}.get(first_stride * 2 ** stage)
        if level:
            features[f"P{level}"] = x
    return BackboneGraph(output=x, features=features)


@register_backbone("resnet18", default_input_shape=(224, 224, 3), head=global_pool_head,
                   description="ResNet-18, own implementation (basic blocks; 11.7M params)")
def resnet18(inputs, imagenet=False, width=64, stem="imagenet"):
    return basic_resnet(inputs, (2, 2, 2, 2), width=width, stem=stem)


@register_backbone("resnet34", default_input_shape=(224, 224, 3), head=global_pool_head,
                   description="ResNet-34, own implementation (basic blocks 3-4-6-3; 21.8M params)")
def resnet34(inputs, imagenet=False, width=64, stem="imagenet"):
    return basic_resnet(inputs, (3, 4, 6, 3), width=width, stem=stem)
