"""VGG-11, VGG-11-LRN, VGG-13, VGG-16, VGG-19 (Simonyan & Zisserman 2015; survey S0 §2, §5.1;
lecture notes S2; SEED_CHECKLIST AR-04).

Spec (S2, AR-04): only 3×3 convolutions, stride 1, pad 1, each followed by ReLU; 2×2 max-pool
stride 2 after each of the five blocks; then FC 4096 → FC 4096 → FC num_classes (softmax),
dropout 0.5 after the two hidden FC layers. Convs per block (VGG paper Table 1):

    A  (vgg11):     1, 1, 2, 2, 2     widths 64, 128, 256, 512, 512
    A-LRN (vgg11_lrn): A with LRN after the first conv (k=2, n=5, α=1e-4, β=0.75 as AlexNet)
    B  (vgg13):     2, 2, 2, 2, 2
    D  (vgg16):     2, 2, 3, 3, 3
    E  (vgg19):     2, 2, 4, 4, 4

vgg11/vgg11_lrn/vgg13 are built here; vgg16/vgg19 wrap ``keras.applications.VGG16/VGG19``
(same graph and layer names ``block{b}_conv{i}`` / ``block{b}_pool``), so that
``weights="imagenet"`` loads the published convolution weights. Parameters at 224×224×3 and
1000 classes: 132,863,336 (A, A-LRN), 133,047,848 (B), 138,357,544 (D), 143,667,240 (E).

Feature levels are the deepest map at each stride: the last conv of block 3 (stride 4), block 4
(8), block 5 (16) and ``block5_pool`` (32), the taps SSD/FCN use (conv4_3, conv5_3). No
stochastic layers in the backbone; dropout in the head is active only with ``training=True``.

Example::

    model = cnn_apps.backbones.create("vgg11", num_classes=10)       # 224×224×3 → 10
    feats = cnn_apps.backbones.create("vgg16", features_only=True)   # P2..P5
    y = model(np.zeros((1, 224, 224, 3)))
"""

import keras

from cnn_apps.backbones.registry import BackboneGraph, register_backbone
from cnn_apps.layers.regularization import LocalResponseNormalization

_CONVS_PER_BLOCK = {"A": (1, 1, 2, 2, 2), "B": (2, 2, 2, 2, 2), "D": (2, 2, 3, 3, 3),
                    "E": (2, 2, 4, 4, 4)}
_WIDTHS = (64, 128, 256, 512, 512)


def vgg_head(feature_map, num_classes):
    """VGG classifier: flatten → fc1 4096 → dropout → fc2 4096 → dropout → softmax."""
    x = keras.layers.Flatten(name="flatten")(feature_map)
    x = keras.layers.Dense(4096, activation="relu", name="fc1")(x)
    x = keras.layers.Dropout(0.5, name="fc1_dropout")(x)
    x = keras.layers.Dense(4096, activation="relu", name="fc2")(x)
    x = keras.layers.Dropout(0.5, name="fc2_dropout")(x)
    return keras.layers.Dense(num_classes, activation="softmax", name="predictions",
                              dtype="float32")(x)


def _features(block_ends, pool5):
    """{P2: block-3 end, P3: block-4 end, P4: block-5 end, P5: block5_pool}."""
    return {"P2": block_ends[2], "P3": block_ends[3], "P4": block_ends[4], "P5": pool5}


def vgg_graph(inputs, config, lrn=False):
    """A VGG feature extractor for paper configuration ``config`` ("A", "B", "D" or "E")."""
    if config not in _CONVS_PER_BLOCK:
        raise ValueError(f"vgg: config must be one of {sorted(_CONVS_PER_BLOCK)}, got {config!r}")
    x, block_ends = inputs, []
    for block, (convs, width) in enumerate(zip(_CONVS_PER_BLOCK[config], _WIDTHS), start=1):
        for i in range(1, convs + 1):
            x = keras.layers.Conv2D(width, 3, padding="same", activation="relu",
                                    name=f"block{block}_conv{i}")(x)
            if lrn and block == 1 and i == 1:
                x = LocalResponseNormalization(name="block1_lrn")(x)
        block_ends.append(x)
        x = keras.layers.MaxPooling2D(2, strides=2, name=f"block{block}_pool")(x)
    return BackboneGraph(output=x, features=_features(block_ends, x))


def _register_built(name, config, lrn, params):
    @register_backbone(name, default_input_shape=(224, 224, 3), head=vgg_head,
                       preprocessing="caffe", min_input_size=32,
                       description=f"VGG config {config}{'-LRN' if lrn else ''}, own "
                                   f"implementation ({params} params)")
    def builder(inputs, imagenet=False):
        return vgg_graph(inputs, config, lrn=lrn)

    return builder


vgg11 = _register_built("vgg11", "A", False, "132.9M")
vgg11_lrn = _register_built("vgg11_lrn", "A", True, "132.9M")
vgg13 = _register_built("vgg13", "B", False, "133.0M")


def _register_keras(name, app_name, convs, params):
    @register_backbone(name, default_input_shape=(224, 224, 3), head=vgg_head,
                       preprocessing="caffe", min_input_size=32, imagenet_weights=True,
                       description=f"{app_name} (keras.applications; {params} params)")
    def builder(inputs, imagenet=False):
        # Looked up at build time, so a test can stand in for the download.
        app_fn = getattr(keras.applications, app_name)
        app = app_fn(include_top=False, weights="imagenet" if imagenet else None,
                     input_tensor=inputs)
        ends = [app.get_layer(f"block{b}_conv{n}").output for b, n in enumerate(convs, start=1)]
        return BackboneGraph(output=app.output, features=_features(ends, app.output))

    return builder


vgg16 = _register_keras("vgg16", "VGG16", _CONVS_PER_BLOCK["D"], "138.4M")
vgg19 = _register_keras("vgg19", "VGG19", _CONVS_PER_BLOCK["E"], "143.7M")
