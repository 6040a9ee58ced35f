"""Evaluation: average precision (OpenCOOD protocol) and bandwidth accounting.

Numpy only (no torch): the evaluation CLI and the scenario's summary share these
functions; the rotated IoU lives in ``perception.iou`` (NMS uses it too).
"""

from revqom_nodes.evaluation.ap import IOU_THRESHOLDS, ApAccumulator, evaluate
from revqom_nodes.evaluation.errors import EvaluationError
from revqom_nodes.perception.iou import rotated_iou, rotated_iou_aligned

__all__ = [
    "IOU_THRESHOLDS",
    "ApAccumulator",
    "EvaluationError",
    "evaluate",
    "rotated_iou",
    "rotated_iou_aligned",
]
