"""Pixel preprocessing inside the model, so every model takes raw 0..255 pixels."""

import keras
from keras import ops

_MODES = ("unit", "tf", "caffe", "torch", "none")
_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)


@keras.saving.register_keras_serializable(package="cnn_apps")
class ImagePreprocessing(keras.layers.Layer):
    """Maps raw pixels in [0, 255] to what a backbone expects.

    Modes: ``unit`` x/255; ``tf`` x/127.5 − 1; ``caffe`` RGB→BGR minus the ImageNet BGR mean
    (``keras.applications.resnet50``); ``torch`` (x/255 − mean)/std; ``none`` identity (the
    backbone rescales itself, e.g. EfficientNet). Grayscale inputs pass through ``unit``/``tf``.

    Example:
      >>> x = keras.Input((32, 32, 3))
      >>> y = ImagePreprocessing("tf")(x)  # values in [-1, 1]
    """

    def __init__(self, mode="unit", **kwargs):
        super().__init__(**kwargs)
        if mode not in _MODES:
            raise ValueError(f"ImagePreprocessing: mode must be one of {_MODES}, got '{mode}'")
        self.mode = mode

    def call(self, x):
        x = ops.cast(x, self.compute_dtype)
        if self.mode == "unit":
            return x / 255.0
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "caffe":
            x = ops.flip(x, axis=-1)
            return x - ops.cast(ops.convert_to_tensor(_CAFFE_BGR_MEAN), self.compute_dtype)
        if self.mode == "torch":
            mean = ops.cast(ops.convert_to_tensor(_TORCH_MEAN), self.compute_dtype)
            std = ops.cast(ops.convert_to_tensor(_TORCH_STD), self.compute_dtype)
            return (x / 255.0 - mean) / std
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}
