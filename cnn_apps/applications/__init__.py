"""Task families. ``get_task(name)`` returns the family's ``Task`` object."""

from __future__ import annotations

import difflib
import importlib

from cnn_apps.errors import CnnAppsError

#: task name -> (module, attribute, one-line description, status)
TASKS = {
    "classification": ("cnn_apps.applications.classification", "TASK",
                       "backbone + GAP + softmax or HD-CNN coarse-to-fine head; top-1/top-5",
                       "ready"),
    "detection": ("cnn_apps.applications.detection", "TASK",
                  "one-stage detectors (SSD, YOLO v1, YOLOv3) on any backbone; COCO AP",
                  "ready"),
    "generative": ("cnn_apps.applications.generative", "TASK",
                   "convolutional VAE/CVAE and DCGAN/CGAN on digits; ELBO, sample grids",
                   "ready"),
    "metric_learning": ("cnn_apps.applications.metric_learning", "TASK",
                        "Siamese/triplet embeddings on any backbone; recall@1, ROC AUC",
                        "ready"),
}

#: families in the design that are not built yet (shown by `cnn-apps list tasks`)
PLANNED = {
    "segmentation": "FCN, dilated (DeepLab-style), multi-scale; mIoU",
    "saliency": "fully convolutional saliency maps; MAE, max F-beta",
    "pose": "DeepPose cascade, heatmap regression; PCK, OKS AP",
    "tracking": "Siamese tracker, tracking-by-detection; success AUC, MOTA/IDF1",
    "text": "text detector + CRNN with CTC; word accuracy, CER",
    "action": "C3D, two-stream, fusion, CNN+LSTM; clip accuracy",
    "speech": "CNN ASR with CTC, WaveNet; WER/CER, NLL",
    "nlp": "Kim CNN, DCNN, gated CNN LM, char-CNN, VDCNN; accuracy, perplexity",
}


def list_tasks():
    return sorted(TASKS)


def get_task(name: str):
    if name not in TASKS:
        if name in PLANNED:
            raise CnnAppsError(f"task '{name}' is planned but not built yet; "
                               f"available: {', '.join(sorted(TASKS))}")
        close = difflib.get_close_matches(str(name), list(TASKS) + list(PLANNED), n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise CnnAppsError(f"unknown task '{name}'.{hint} Available: {', '.join(sorted(TASKS))}")
    module, attr, _, _ = TASKS[name]
    return getattr(importlib.import_module(module), attr)
