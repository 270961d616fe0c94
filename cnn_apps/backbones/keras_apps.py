"""Adapters to ``keras.applications``: same registry contract, ImageNet weights on request.

Registered here: ResNet-50/101/152 (survey S0 §3.6.5, §5.1; SEED_CHECKLIST AR-11), MobileNetV1,
MobileNetV2, MobileNetV3-Small/Large (lecture notes S2; AR-21), Xception (S2; AR-19) and
EfficientNet-B0. Each wrap ends at the application's last feature map (``include_top=False``);
``create(name, num_classes=N)`` adds the paper's head (global average pool + softmax FC;
MobileNetV3: GAP → 1×1 conv 1024/1280 + hard-swish → dropout → FC). Parameter counts at 1000
classes equal ``keras.applications.<App>(include_top=True).count_params()``.

``weights="imagenet"`` is delegated to ``keras.applications`` (it downloads the file once, for
users with internet). Feature levels are taken from the application's own layer names.
"""

import keras

from cnn_apps.backbones.registry import BackboneGraph, register_backbone


def _efficientnet_head(feature_map, num_classes):
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(feature_map)
    x = keras.layers.Dropout(0.2, name="top_dropout")(x)
    return keras.layers.Dense(num_classes, activation="softmax", name="predictions",
                              dtype="float32")(x)


def _wrap(app_fn, feature_names):
    """Builder for ``app_fn``; ``feature_names`` maps a level to a layer name, or to a function
    ``app -> tensor`` where the layer has no stable name (Keras numbers unnamed layers)."""

    def builder(inputs, imagenet=False, **kwargs):
        app = app_fn(include_top=False, weights="imagenet" if imagenet else None,
                     input_tensor=inputs, **kwargs)
        features = {level: layer(app) if callable(layer) else app.get_layer(layer).output
                    for level, layer in feature_names.items()}
        return BackboneGraph(output=app.output, features=features)

    return builder


def final_map(app):
    """The application's last feature map."""
    return app.output


def stem_end(before):
    """The input of the last max-pool before layer ``before``: the deepest stride-4 map of the
    Inception stems (the 71×71×192 map at 299 input)."""

    def pick(app):
        pool = None
        for layer in app.layers:
            if layer.name == before:
                return pool.input
            if isinstance(layer, keras.layers.MaxPooling2D):
                pool = layer
        raise ValueError(f"stem_end: no layer named {before!r} in {app.name}")

    return pick


def nth_add(index):
    """Output of the ``index``-th ``Add`` layer (Xception's residual joins are unnamed)."""

    def pick(app):
        return [layer for layer in app.layers if isinstance(layer, keras.layers.Add)][index].output

    return pick


register_backbone(
    "resnet50", default_input_shape=(224, 224, 3), imagenet_weights=True, preprocessing="caffe",
    description="ResNet-50 (keras.applications; bottleneck blocks; 25.6M params)",
)(_wrap(keras.applications.ResNet50, {"P2": "conv2_block3_out", "P3": "conv3_block4_out",
                                      "P4": "conv4_block6_out", "P5": "conv5_block3_out"}))

register_backbone(
    "mobilenet_v2", default_input_shape=(224, 224, 3), imagenet_weights=True, preprocessing="tf",
    description="MobileNetV2 (keras.applications; inverted residuals; 3.5M params)",
)(_wrap(keras.applications.MobileNetV2, {"P2": "block_3_expand_relu",
                                         "P3": "block_6_expand_relu",
                                         "P4": "block_13_expand_relu", "P5": "out_relu"}))

register_backbone(
    "efficientnet_b0", default_input_shape=(224, 224, 3), imagenet_weights=True,
    preprocessing="none", head=_efficientnet_head,
    description="EfficientNet-B0 (keras.applications; MBConv + SE; 5.3M params)",
)(_wrap(keras.applications.EfficientNetB0, {"P2": "block2b_add", "P3": "block3b_add",
                                            "P4": "block5c_add", "P5": "top_activation"}))


# Figures in the descriptions: keras.applications' table (count_params at 1000 classes).
register_backbone(
    "resnet101", default_input_shape=(224, 224, 3), imagenet_weights=True, preprocessing="caffe",
    description="ResNet-101 (keras.applications; bottleneck blocks 3-4-23-3; 44.7M params)",
)(_wrap(keras.applications.ResNet101, {"P2": "conv2_block3_out", "P3": "conv3_block4_out",
                                       "P4": "conv4_block23_out", "P5": "conv5_block3_out"}))

register_backbone(
    "resnet152", default_input_shape=(224, 224, 3), imagenet_weights=True, preprocessing="caffe",
    description="ResNet-152 (keras.applications; bottleneck blocks 3-8-36-3; 60.4M params)",
)(_wrap(keras.applications.ResNet152, {"P2": "conv2_block3_out", "P3": "conv3_block8_out",
                                       "P4": "conv4_block36_out", "P5": "conv5_block3_out"}))

register_backbone(
    "mobilenet_v1", default_input_shape=(224, 224, 3), imagenet_weights=True, preprocessing="tf",
    description="MobileNetV1 (keras.applications MobileNet; depthwise separable; 4.3M params)",
)(_wrap(keras.applications.MobileNet, {"P2": "conv_pw_3_relu", "P3": "conv_pw_5_relu",
                                       "P4": "conv_pw_11_relu", "P5": "conv_pw_13_relu"}))


def _mobilenet_v3_head(last_point_channels):
    """MobileNetV3's classifier (Howard et al. 2019 Fig. 5): GAP → 1×1 conv (here Dense on the
    pooled vector, same weights) with hard-swish → dropout 0.2 → softmax classifier."""

    def head(feature_map, num_classes):
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(feature_map)
        x = keras.layers.Dense(last_point_channels, activation="hard_swish", name="last_point")(x)
        x = keras.layers.Dropout(0.2, name="top_dropout")(x)
        return keras.layers.Dense(num_classes, activation="softmax", name="predictions",
                                  dtype="float32")(x)

    return head


# keras' MobileNetV3 rescales 0..255 pixels itself (include_preprocessing=True): "none".
register_backbone(
    "mobilenet_v3_small", default_input_shape=(224, 224, 3), imagenet_weights=True,
    preprocessing="none", head=_mobilenet_v3_head(1024),
    description="MobileNetV3-Small (keras.applications; SE + hard-swish; 2.55M params)",
)(_wrap(keras.applications.MobileNetV3Small, {
    "P2": "expanded_conv_project_bn", "P3": "expanded_conv_2_add",
    "P4": "expanded_conv_7_add", "P5": final_map}))

register_backbone(
    "mobilenet_v3_large", default_input_shape=(224, 224, 3), imagenet_weights=True,
    preprocessing="none", head=_mobilenet_v3_head(1280),
    description="MobileNetV3-Large (keras.applications; SE + hard-swish; 5.5M params)",
)(_wrap(keras.applications.MobileNetV3Large, {
    "P2": "expanded_conv_2_add", "P3": "expanded_conv_5_add",
    "P4": "expanded_conv_11_add", "P5": final_map}))

# Xception's valid-padded entry conv needs 71 pixels (keras.applications' own minimum).
register_backbone(
    "xception", default_input_shape=(299, 299, 3), imagenet_weights=True, preprocessing="tf",
    min_input_size=71,
    description="Xception (keras.applications; depthwise separable Inception; 22.9M params)",
)(_wrap(keras.applications.Xception, {"P2": nth_add(0), "P3": nth_add(1), "P4": nth_add(-2),
                                      "P5": final_map}))
