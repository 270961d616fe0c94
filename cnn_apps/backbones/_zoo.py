"""Imports every backbone module so that its ``@register_backbone`` builders run."""

from cnn_apps.backbones import (alexnet, densenet, highway, inception, keras_apps,  # noqa: F401
                                lenet, mobile, nin, resnet, resnet_variants, vgg)
