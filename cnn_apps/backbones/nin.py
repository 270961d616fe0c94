"""Network in Network, ImageNet model (Lin et al. 2014; survey S0 §3.1.4; SEED_CHECKLIST AR-05,
V-05).

NIN stacks *mlpconv* layers: a k×k convolution followed by 1×1 convolutions ("cascaded
cross-channel parametric pooling", ``MLPConv2D``), each with ReLU, and replaces the FC
classifier by global average pooling over one map per class (S0 §3.1.4). The ImageNet model of
the paper's Caffe release (four mlpconv stacks)::

    mlpconv1: 96 11×11 s4 → 96 1×1 → 96 1×1     → MaxPool 3×3 s2
    mlpconv2: 256 5×5 p2 → 256 1×1 → 256 1×1    → MaxPool 3×3 s2
    mlpconv3: 384 3×3 p1 → 384 1×1 → 384 1×1    → MaxPool 3×3 s2    (backbone output, 6×6×384)
    head:     dropout 0.5 → mlpconv4: 1024 3×3 p1 → 1024 1×1 → num_classes 1×1 → GAP → softmax

The paper's head *is* the last mlpconv producing one map per class, so ``create("nin",
num_classes=N)`` builds it with N maps; ``create("nin")`` (feature extractor) ends at pool3.
7,595,176 parameters at 1000 classes (≈7.6M). Default input 227×227 (the Caffe model crops 224
and pools in ceil mode; 227 with floor-mode pooling gives the same 55/27/13/6 grids).
Deterministic at inference; the dropout is active only with ``training=True``.

Example::

    model = cnn_apps.backbones.create("nin", num_classes=10)   # 227×227×3 → 10 classes
    feats = cnn_apps.backbones.create("nin", features_only=True)
    y = model(np.zeros((1, 227, 227, 3)))
"""

import keras

from cnn_apps.backbones.registry import BackboneGraph, register_backbone
from cnn_apps.layers.convolution import MLPConv2D


def nin_head(feature_map, num_classes):
    """NIN classifier: dropout → mlpconv (1024 3×3, 1024 1×1, num_classes 1×1) → GAP → softmax."""
    x = keras.layers.Dropout(0.5, name="mlpconv4_dropout")(feature_map)
    x = MLPConv2D([1024, 1024, num_classes], kernel_size=3, padding="same", name="mlpconv4")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.layers.Activation("softmax", name="predictions", dtype="float32")(x)


# Smallest side with a >= 1×1 pool3: mlpconv1 out >= 15 → (H - 11)/4 + 1 >= 15.
@register_backbone("nin", default_input_shape=(227, 227, 3), head=nin_head,
                   preprocessing="caffe", min_input_size=67,
                   description="Network in Network, ImageNet model (4 mlpconv + GAP; 7.6M params)")
def nin(inputs, imagenet=False):
    m1 = MLPConv2D([96, 96, 96], kernel_size=11, strides=4, padding="valid",
                   name="mlpconv1")(inputs)
    x = keras.layers.MaxPooling2D(3, strides=2, name="pool1")(m1)
    m2 = MLPConv2D([256, 256, 256], kernel_size=5, padding="same", name="mlpconv2")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="pool2")(m2)
    m3 = MLPConv2D([384, 384, 384], kernel_size=3, padding="same", name="mlpconv3")(x)
    p3 = keras.layers.MaxPooling2D(3, strides=2, name="pool3")(m3)
    # 227 input: mlpconv1 55×55 (stride 4), mlpconv2 27 (8), mlpconv3 13 (16), pool3 6 (32).
    return BackboneGraph(output=p3, features={"P2": m1, "P3": m2, "P4": m3, "P5": p3})
