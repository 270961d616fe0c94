"""Backbone registry: ``create(name, ...)``, ``list_backbones()``, ``register_backbone``."""

from cnn_apps.backbones.necks import (FeaturePyramid, attach_classification_head,
                                      feature_pyramid_model)
from cnn_apps.backbones.preprocessing import ImagePreprocessing
from cnn_apps.backbones.registry import (BackboneGraph, BackboneSpec, create, get_spec,
                                         global_pool_head, list_backbones, load_weights_file,
                                         register_backbone)

__all__ = ["BackboneGraph", "BackboneSpec", "FeaturePyramid", "ImagePreprocessing",
           "attach_classification_head", "create", "feature_pyramid_model", "get_spec",
           "global_pool_head", "list_backbones", "load_weights_file", "register_backbone"]
