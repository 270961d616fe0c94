"""DenseNet-121/169/201 (Huang et al. 2017; survey S0 §3.6.5; SEED_CHECKLIST AR-16, S-05).

Dense connectivity (S0 §3.6.5): inside a dense block layer l receives the concatenation of all
earlier maps, ``x_l = H_l([x_0, x_1, ..., x_{l-1}])``, with ``H_l`` = BN → ReLU → 1×1 conv (4k)
→ BN → ReLU → 3×3 conv (k), growth rate k = 32. Transition layers (BN → ReLU → 1×1 conv halving
the channels → 2×2 average pool) join the four blocks; stem 7×7/2 conv + 3×3/2 max-pool; head
BN → ReLU → global average pool → softmax FC. Layers per block: 121 = 6-12-24-16,
169 = 6-12-32-32, 201 = 6-12-48-32.

These wrap ``keras.applications.DenseNet121/169/201`` (so ``weights="imagenet"`` works).
Parameters at 1000 classes (keras ``count_params``, BN moving statistics included):
8,062,504 / 14,307,880 / 20,242,984; trainable only (torchvision's figures): 7,978,856 /
14,149,480 / 20,013,928. Feature levels: the BN-ReLU output closing each dense block
(``pool2_relu`` stride 4, ``pool3_relu`` 8, ``pool4_relu`` 16) and the final ``relu`` (32).
BN uses batch statistics with ``training=True`` and moving averages at inference.

Example::

    model = cnn_apps.backbones.create("densenet121", num_classes=10)
    feats = cnn_apps.backbones.create("densenet121", features_only=True)  # P2..P5
    y = model(np.zeros((1, 224, 224, 3)))
"""

import keras

from cnn_apps.backbones.keras_apps import _wrap
from cnn_apps.backbones.registry import register_backbone

_DENSENET_LEVELS = {"P2": "pool2_relu", "P3": "pool3_relu", "P4": "pool4_relu", "P5": "relu"}

for _name, _app_fn, _blocks, _params in (
        ("densenet121", keras.applications.DenseNet121, "6-12-24-16", "8.1M"),
        ("densenet169", keras.applications.DenseNet169, "6-12-32-32", "14.3M"),
        ("densenet201", keras.applications.DenseNet201, "6-12-48-32", "20.2M")):
    register_backbone(
        _name, default_input_shape=(224, 224, 3), imagenet_weights=True, preprocessing="torch",
        description=f"DenseNet (keras.applications; k=32, blocks {_blocks}; {_params} params)",
    )(_wrap(_app_fn, _DENSENET_LEVELS))
