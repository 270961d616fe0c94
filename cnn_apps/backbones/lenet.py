"""LeNet-5 (LeCun et al. 1998; lecture notes S2 spec, SEED_CHECKLIST AR-01).

S2 spec: 32×32 input (28×28 with pad 2) → C1 5×5 conv(6) → S2 2×2 pool s2 → C3 5×5 conv(16) →
S4 2×2 pool s2 → FC120 → FC84 → FC10, sigmoid activations, about 60,000 parameters
(61,706 exactly for one input channel and 10 classes). S2 adds that "ReLU and max-pooling work
better": ``activation`` and ``pooling`` choose between the original and that variant.
"""

import keras

from cnn_apps.backbones.registry import BackboneGraph, register_backbone


def lenet_head(feature_map, num_classes, activation="sigmoid"):
    """LeNet's classifier: flatten → FC120 → FC84 → softmax."""
    x = keras.layers.Flatten(name="flatten")(feature_map)
    x = keras.layers.Dense(120, activation=activation, name="f5")(x)
    x = keras.layers.Dense(84, activation=activation, name="f6")(x)
    return keras.layers.Dense(num_classes, activation="softmax", name="predictions",
                              dtype="float32")(x)


@register_backbone("lenet5", default_input_shape=(32, 32, 1), min_input_size=32,
                   description="LeNet-5 (S2 spec: C1-S2-C3-S4 + FC120-FC84; ~60k params)",
                   head=lenet_head)
def lenet5(inputs, imagenet=False, activation="sigmoid", pooling="avg"):
    if pooling not in ("avg", "max"):
        raise ValueError(f"lenet5: pooling must be 'avg' or 'max', got '{pooling}'")
    pool = keras.layers.AveragePooling2D if pooling == "avg" else keras.layers.MaxPooling2D
    x = keras.layers.Conv2D(6, 5, activation=activation, name="c1")(inputs)
    s2 = pool(2, name="s2")(x)
    x = keras.layers.Conv2D(16, 5, activation=activation, name="c3")(s2)
    s4 = pool(2, name="s4")(x)
    # LeNet's strides are 2 and ~6 (valid 5x5 convs shrink the map): two levels.
    return BackboneGraph(output=s4, features={"P1": s2, "P2": s4})
