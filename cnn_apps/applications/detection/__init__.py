"""Object detection (survey S0 §5.2): one-stage detectors on one box toolkit.

``DETECTORS``: ``ssd`` (Liu et al. 2016, multibox loss with 3:1 hard negative mining) and
``yolo`` (Redmon et al. 2016, YOLO v1 sum-squared grid loss) and ``yolo_v3`` (3 scales × 3
anchors, objectness and class sigmoid BCE). ``TASK`` is the
``DetectionTask`` (data pipeline, COCO AP evaluation, predict, TF OD API serving).
"""

from cnn_apps.applications.detection.data import (augment_example, crop_example, flip_example,
                                                  load_detection_records,
                                                  make_detection_dataset, records_to_arrays)
from cnn_apps.applications.detection.detectors import DETECTORS, Detector, get_detector
from cnn_apps.applications.detection.ssd import SSDMultiboxLoss
from cnn_apps.applications.detection.task import DetectionTask
from cnn_apps.applications.detection.yolo import YoloV1Loss
from cnn_apps.applications.detection.yolo_v3 import YoloV3Loss

TASK = DetectionTask()

__all__ = ["TASK", "DETECTORS", "Detector", "DetectionTask", "SSDMultiboxLoss", "YoloV1Loss",
           "YoloV3Loss",
           "augment_example", "crop_example", "flip_example", "get_detector",
           "load_detection_records", "make_detection_dataset",
           "records_to_arrays"]
