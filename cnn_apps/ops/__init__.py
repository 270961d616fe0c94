"""cnn_apps.ops: pure tensor functions shared by task pipelines (boxes, anchors, NMS) and
numpy region proposals (selective search)."""

from cnn_apps.ops.anchors import *  # noqa: F401,F403
from cnn_apps.ops.boxes import *  # noqa: F401,F403
from cnn_apps.ops.selective_search import selective_search  # noqa: F401
from cnn_apps.ops import anchors, boxes

__all__ = list(anchors.__all__) + list(boxes.__all__) + ["selective_search"]
