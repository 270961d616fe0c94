"""Image classification (survey S0 §5.1): backbone + softmax or HD-CNN coarse-to-fine head."""

from cnn_apps.applications.classification.model import (CoarseWeightedAverage, build_classifier,
                                                        cluster_classes)
from cnn_apps.applications.classification.task import ClassificationTask, topk_accuracy

TASK = ClassificationTask()

__all__ = ["TASK", "ClassificationTask", "CoarseWeightedAverage", "build_classifier",
           "cluster_classes", "topk_accuracy"]
