"""Adapters to ``keras.applications``: same registry contract, ImageNet weights on request.

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
    def builder(inputs, imagenet=False, **kwargs):
        app = app_fn(include_top=False, weights="imagenet" if imagenet else None,
                     input_tensor=inputs, **kwargs)
        features = {level: app.get_layer(layer).output for level, layer in feature_names.items()}
        return BackboneGraph(output=app.output, features=features)

    return builder


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
