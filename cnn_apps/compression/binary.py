"""XNOR-Net LeNet-5 for the ``binary`` compression method (survey S0 §4.3; SEED_CHECKLIST
F-10, F-12).

The network follows LeNet-5's shape (C1 5×5×6, pool, C3 5×5×16, pool, FC120, FC84, FC-classes)
with the XNOR-Net recipe (Rastegari et al.): the first and the last layers stay full precision
(as in the XNOR-Net paper, which keeps them real-valued because binarizing them costs the most
accuracy for the least saving); every other conv/dense layer is a :class:`BinaryConv2D` /
:class:`BinaryDense` in ``"xnor"`` mode (binary weights with a per-filter scale
``α = mean|W|``, sign of the input, straight-through gradients). Each binary layer is preceded
by BatchNormalization so the sign of its input is taken around zero (XNOR-Net's block order
BN → binary activation → binary conv → pool). It is trained from scratch.
"""

from __future__ import annotations

import keras

from cnn_apps.backbones.preprocessing import ImagePreprocessing


def xnor_lenet5(input_shape, num_classes, mode="xnor", name="xnor_lenet5"):
    """``image (raw 0..255) -> {"probabilities"}``: LeNet-5 with binary inner layers.

    Args:
        input_shape: ``(H, W, C)`` with ``H, W >= 28`` (LeNet-5's 32×32 input or larger).
        num_classes: number of classes.
        mode: binary mode of the inner layers: ``"xnor"``, ``"bnn"`` or ``"dorefa"``.

    Training and inference run the same binarized function (BatchNormalization uses its moving
    statistics at inference).

    Example:
        >>> model = xnor_lenet5((32, 32, 3), 10)
        >>> model(np.zeros((2, 32, 32, 3)))["probabilities"].shape
        (2, 10)
    """
    from cnn_apps.layers.quantized import BinaryConv2D, BinaryDense

    input_shape = tuple(int(v) for v in input_shape)
    if len(input_shape) != 3 or min(input_shape[:2]) < 28:
        raise ValueError(f"input_shape must be (H, W, C) with H, W >= 28, got {input_shape}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    inputs = keras.Input(input_shape, name="images")
    x = ImagePreprocessing("unit", name="preprocess")(inputs)
    x = keras.layers.Conv2D(6, 5, use_bias=False, name="c1")(x)       # full precision
    x = keras.layers.BatchNormalization(name="c1_bn")(x)
    x = keras.layers.MaxPooling2D(2, name="s2")(x)
    x = BinaryConv2D(16, 5, mode=mode, use_bias=False, name="c3")(x)
    x = keras.layers.BatchNormalization(name="c3_bn")(x)
    x = keras.layers.MaxPooling2D(2, name="s4")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = BinaryDense(120, mode=mode, use_bias=False, name="f5")(x)
    x = keras.layers.BatchNormalization(name="f5_bn")(x)
    x = BinaryDense(84, mode=mode, use_bias=False, name="f6")(x)
    x = keras.layers.BatchNormalization(name="f6_bn")(x)
    probs = keras.layers.Dense(num_classes, activation="softmax", name="probabilities",
                               dtype="float32")(x)                     # full precision
    return keras.Model(inputs, {"probabilities": probs}, name=name)
