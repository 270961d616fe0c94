"""Imports every backbone module so that its ``@register_backbone`` builders run."""

from cnn_apps.backbones import keras_apps, lenet, resnet  # noqa: F401
