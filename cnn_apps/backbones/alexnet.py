"""AlexNet and ZFNet (survey S0 §2, §3.6.2, §5.1; lecture notes S2; SEED_CHECKLIST AR-02, AR-03).

AlexNet, S2 spec (single tower, as S2 draws it rather than the paper's two GPU halves)::

    227×227×3 → CONV1 96 11×11 s4 p0 (55×55) → MaxPool 3×3 s2 (27×27) → LRN
              → CONV2 256 5×5 s1 p2 (27×27) → MaxPool 3×3 s2 (13×13) → LRN
              → CONV3 384 3×3 p1 → CONV4 384 3×3 p1 → CONV5 256 3×3 p1 → MaxPool 3×3 s2 (6×6)
              → FC6 4096 → FC7 4096 → FC8 (num_classes, softmax)

ReLU after every conv/FC, dropout 0.5 after FC6 and FC7, LRN with k=2, n=5, α=1e-4, β=0.75
(``LocalResponseNormalization`` defaults). Initialisation as in Krizhevsky et al. (S0 §3.6.2,
SEED_CHECKLIST I-02): weights N(0, 0.01²) (``alexnet_normal``), biases 1 on conv2/4/5 and the
hidden FC layers, 0 elsewhere. 62,378,344 parameters at 1000 classes.

ZFNet (Zeiler & Fergus 2014), S2: "same as AlexNet except CONV1 7×7 stride 2 and CONV3/4/5
512/1024/512 filters". Taken literally at 227 input that leaves a 13×13×512 map before FC6
(354 M weights in FC6 alone), so the strides follow the paper's Figure 3 as well: 224 input,
CONV1 7×7 s2 (pad 1, 110×110) → pool 3×3 s2 (55) → LRN → CONV2 256 5×5 **s2** (26) → pool 3×3 s2
(13) → LRN → CONV3/4/5 512/1024/512 3×3 p1 → pool 3×3 s2 (6×6×512) → FC 4096 → FC 4096 → FC.
Weights N(0, 0.01²) and zero biases (the paper's initialisation). 107,627,624 parameters at
1000 classes (the conv3-5 widening makes FC6 6·6·512·4096).

Both nets are deterministic at inference; dropout is active only with ``training=True``.

Example::

    model = cnn_apps.backbones.create("alexnet", num_classes=10)   # 227×227×3 → 10 classes
    feats = cnn_apps.backbones.create("zfnet", features_only=True)  # P2..P5
    y = model(np.zeros((1, 227, 227, 3)))
"""

import keras

from cnn_apps.backbones.registry import BackboneGraph, register_backbone
from cnn_apps.layers.regularization import (LocalResponseNormalization, alexnet_bias_initializer,
                                            alexnet_normal)


def _fc_head(feature_map, num_classes, bias_initializer, dropout=0.5, units=4096):
    """Flatten → FC6 → dropout → FC7 → dropout → FC8 softmax (AlexNet/ZFNet classifier)."""
    x = keras.layers.Flatten(name="flatten")(feature_map)
    for name in ("fc6", "fc7"):
        x = keras.layers.Dense(units, activation="relu", kernel_initializer=alexnet_normal(),
                               bias_initializer=bias_initializer(name), name=name)(x)
        x = keras.layers.Dropout(dropout, name=f"{name}_dropout")(x)
    return keras.layers.Dense(num_classes, activation="softmax",
                              kernel_initializer=alexnet_normal(),
                              bias_initializer=bias_initializer("fc8"), name="predictions",
                              dtype="float32")(x)


def alexnet_head(feature_map, num_classes):
    """AlexNet classifier with its paper initialisation (biases 1 on FC6/FC7)."""
    return _fc_head(feature_map, num_classes, alexnet_bias_initializer)


def zfnet_head(feature_map, num_classes):
    """ZFNet classifier: as AlexNet's, with zero biases (Zeiler & Fergus §3)."""
    return _fc_head(feature_map, num_classes, lambda name: "zeros")


def _conv(x, filters, kernel, name, strides=1, padding="same", bias="zeros"):
    return keras.layers.Conv2D(filters, kernel, strides=strides, padding=padding,
                               activation="relu", kernel_initializer=alexnet_normal(),
                               bias_initializer=bias, name=name)(x)


def _pool(x, name, padding="valid"):
    return keras.layers.MaxPooling2D(3, strides=2, padding=padding, name=name)(x)


# Smallest side for which pool5 is still >= 1×1: conv1 out >= 15 → (H - 11)/4 + 1 >= 15.
@register_backbone("alexnet", default_input_shape=(227, 227, 3), head=alexnet_head,
                   preprocessing="caffe", min_input_size=67,
                   description="AlexNet, S2 single-tower spec (5 conv + 3 FC, LRN; 62.4M params)")
def alexnet(inputs, imagenet=False):
    bias = alexnet_bias_initializer
    c1 = _conv(inputs, 96, 11, "conv1", strides=4, padding="valid", bias=bias("conv1"))
    x = _pool(c1, "pool1")
    x = LocalResponseNormalization(name="norm1")(x)
    c2 = _conv(x, 256, 5, "conv2", bias=bias("conv2"))
    x = _pool(c2, "pool2")
    x = LocalResponseNormalization(name="norm2")(x)
    x = _conv(x, 384, 3, "conv3", bias=bias("conv3"))
    x = _conv(x, 384, 3, "conv4", bias=bias("conv4"))
    c5 = _conv(x, 256, 3, "conv5", bias=bias("conv5"))
    p5 = _pool(c5, "pool5")
    # Deepest map at each stride: conv1 (4), conv2 (8), conv5 (16), pool5 (32).
    return BackboneGraph(output=p5, features={"P2": c1, "P3": c2, "P4": c5, "P5": p5})


# Smallest side with a >= 1×1 pool5: conv5 >= 3 ← conv2 >= 5 ← pool1 >= 13 ← conv1 >= 25.
@register_backbone("zfnet", default_input_shape=(224, 224, 3), head=zfnet_head,
                   preprocessing="caffe", min_input_size=53,
                   description="ZFNet (conv1 7x7/2, conv3-5 512/1024/512; 107.6M params)")
def zfnet(inputs, imagenet=False):
    x = keras.layers.ZeroPadding2D(1, name="conv1_pad")(inputs)
    x = _conv(x, 96, 7, "conv1", strides=2, padding="valid")
    x = _pool(x, "pool1", padding="same")
    n1 = LocalResponseNormalization(name="norm1")(x)
    c2 = _conv(n1, 256, 5, "conv2", strides=2, padding="valid")
    x = _pool(c2, "pool2", padding="same")
    x = LocalResponseNormalization(name="norm2")(x)
    x = _conv(x, 512, 3, "conv3")
    x = _conv(x, 1024, 3, "conv4")
    c5 = _conv(x, 512, 3, "conv5")
    p5 = _pool(c5, "pool5")
    # 224 input: norm1 55×55 (stride 4), conv2 26 (8), conv5 13 (16), pool5 6 (32).
    return BackboneGraph(output=p5, features={"P2": n1, "P3": c2, "P4": c5, "P5": p5})
