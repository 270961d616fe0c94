"""The detector registry: ``DETECTORS[name]`` → a :class:`Detector` (survey S0 §5.2).

A detector bundles the model builder, its loss (compiled by ``compile_model``), the metadata
its post-processing needs (``info``, stored in ``model_info.json``) and the in-graph
``postprocess(raw_outputs, info)`` → the four TF OD API outputs (``common.nms_outputs``).

Example::

    det = get_detector("ssd")
    model = det.build_model(config, num_classes=4, backbone="resnet18")
    info = {"detector": det.info(config, 4, model), "postprocess": postprocess_config(config)}
    det.compile_model(model, config, 1e-3, info)
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from cnn_apps.applications.detection import ssd, yolo, yolo_v3
from cnn_apps.errors import ConfigError


@dataclass(frozen=True)
class Detector:
    name: str
    description: str
    _build: Callable
    _info: Callable
    _loss: Callable
    _postprocess: Callable
    #: optional ``compile(model, config, learning_rate, info)`` replacing the default compile
    #: (detectors whose model subclass has its own ``train_step``, e.g. two-stage ones).
    _compile: Callable | None = None
    #: optional ``finalize(model, config, task, run_dir) -> model``: stages after gradient
    #: training (R-CNN / SPP-net SVMs and box regressors); see ``Task.finalize_model``.
    _finalize: Callable | None = None
    #: the model takes ``{"images", "proposals"}`` (external region proposals, e.g.
    #: selective search) instead of images alone.
    needs_proposals: bool = False
    #: ``jit_compile=true`` is honoured (the two-stage detectors' custom train steps run
    #: without XLA; asking for it is a ConfigError, not a silent fallback).
    supports_jit: bool = True

    def build_model(self, config, num_classes, backbone=None):
        """``images`` (N, S, S, 3) raw pixels → ``{"raw": tensor}``; ``backbone`` overrides
        ``config["backbone"]``."""
        if int(num_classes) < 1:
            raise ValueError(f"`num_classes` must be >= 1; got {num_classes}.")
        config = {**config, "backbone": backbone or config["backbone"]}
        return self._build(config, int(num_classes))

    def info(self, config, num_classes, model):
        """JSON-able metadata the loss and post-processing rebuild their constants from."""
        return self._info(config, int(num_classes), model)

    def loss(self, config, info):
        return self._loss(config, info)

    def compile_model(self, model, config, learning_rate, info):
        if self._compile is not None:
            return self._compile(model, config, learning_rate, info)
        from cnn_apps.training.fit import make_optimizer

        model.compile(optimizer=make_optimizer({**config, "learning_rate": learning_rate}),
                      loss={"raw": self.loss(config, info)},
                      jit_compile=bool(config.get("jit_compile", False)))

    def finalize(self, model, config, task, run_dir):
        if self._finalize is None:
            return model
        return self._finalize(model, config, task, run_dir)

    def postprocess(self, raw_outputs, info):
        """Raw model output → ``{"detection_boxes", "detection_scores", "detection_classes",
        "num_detections"}`` (NMS inside the graph)."""
        return self._postprocess(raw_outputs, info)


DETECTORS = {
    "ssd": Detector("ssd", "SSD multibox: default boxes on several maps, 3:1 hard negatives",
                    ssd.build_model, ssd.info,
                    lambda config, info: ssd.loss(config, info["detector"]), ssd.postprocess),
    "yolo": Detector("yolo", "YOLO v1: S×S grid, B boxes + C class probabilities per cell",
                     yolo.build_model, yolo.info,
                     lambda config, info: yolo.loss(config, info["detector"],
                                                    len(info["class_names"])),
                     yolo.postprocess),
    "yolo_v3": Detector("yolo_v3", "YOLOv3: 3 scales x 3 anchors, objectness + class sigmoids",
                        yolo_v3.build_model, yolo_v3.info,
                        lambda config, info: yolo_v3.loss(config, info["detector"],
                                                          len(info["class_names"])),
                        yolo_v3.postprocess),
}

# Detectors defined in their own modules (each exposes ``DETECTOR``), imported on first use.
_MODULES = {
    "rcnn": "cnn_apps.applications.detection.rcnn",
    "sppnet": "cnn_apps.applications.detection.sppnet",
    "fast_rcnn": "cnn_apps.applications.detection.fast_rcnn",
    "faster_rcnn": "cnn_apps.applications.detection.faster_rcnn",
}


def detector_names():
    return [*DETECTORS, *_MODULES]


def get_detector(name):
    if name in DETECTORS:
        return DETECTORS[name]
    if name in _MODULES:
        DETECTORS[name] = importlib.import_module(_MODULES[name]).DETECTOR
        return DETECTORS[name]
    raise ConfigError(f"model must be one of {', '.join(detector_names())}, got '{name}'")
