"""Evaluation: BEV rotated IoU, average precision (OpenCOOD protocol) and bandwidth accounting.

Numpy only (no torch): the evaluation CLI, the runtime's summary and the
perception NMS share these functions.
"""

from revqom_nodes.evaluation.ap import IOU_THRESHOLDS, ApAccumulator, evaluate
from revqom_nodes.evaluation.errors import EvaluationError
from revqom_nodes.evaluation.iou import rotated_iou, rotated_iou_aligned

__all__ = [
    "IOU_THRESHOLDS",
    "ApAccumulator",
    "EvaluationError",
    "evaluate",
    "rotated_iou",
    "rotated_iou_aligned",
]
