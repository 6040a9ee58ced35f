"""Average precision with the OpenCOOD protocol (see shared reference dair-v2x.md).

Per frame and IoU threshold t: predictions (score threshold and NMS already
applied by the detector) and ground truth are restricted to boxes whose four
bottom corners lie inside the evaluation range; predictions, by decreasing
score, are matched greedily to the remaining ground truth by BEV rotated IoU:
IoU >= t is a true positive and removes that box, anything else a false
positive. Every ground-truth box counts, also in frames without predictions.
Over all frames: stable sort by score, cumulative TP / FP, recall and
precision, VOC all-point AP. With no ground truth at all, AP is 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from revqom_nodes.evaluation.errors import EvaluationError
from revqom_nodes.perception.iou import bev_corners, rotated_iou

IOU_THRESHOLDS = (0.3, 0.5, 0.7)
DEFAULT_RANGE_M = (-100.0, -40.0, 100.0, 40.0)  # x_min, y_min, x_max, y_max


def _boxes(values: np.ndarray, name: str) -> np.ndarray:
    boxes = np.asarray(values, dtype=np.float64)
    if boxes.size == 0:
        return boxes.reshape(0, 7)
    if boxes.ndim != 2 or boxes.shape[1] != 7:
        raise EvaluationError(f"{name} must be (M, 7) boxes, got shape {boxes.shape}")
    return boxes


def inside_range(boxes: np.ndarray, range_m: Sequence[float]) -> np.ndarray:
    """(M, 7) boxes -> (M,) bool: all four bottom corners within [x_min, x_max] x [y_min, y_max]."""
    x_min, y_min, x_max, y_max = range_m
    corners = bev_corners(boxes)
    inside = (corners[..., 0] >= x_min) & (corners[..., 0] <= x_max)
    inside &= (corners[..., 1] >= y_min) & (corners[..., 1] <= y_max)
    return inside.all(axis=1)


def match_frame(
    pred_boxes: np.ndarray, pred_scores: np.ndarray, gt_boxes: np.ndarray, iou_threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """One frame -> (scores sorted decreasing (P,), true-positive flags (P,) bool), greedy matching."""
    order = np.argsort(-pred_scores, kind="stable")
    iou = rotated_iou(pred_boxes[order], gt_boxes)  # (P, M)
    available = np.ones(len(gt_boxes), dtype=bool)
    tp = np.zeros(len(order), dtype=bool)
    for i in range(len(order)):
        if not available.any():
            break
        candidates = np.where(available, iou[i], -1.0)
        best = int(np.argmax(candidates))
        if candidates[best] >= iou_threshold:
            tp[i] = True
            available[best] = False
    return pred_scores[order], tp


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC all-point AP from recall and precision at each ranked prediction."""
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.nonzero(mrec[1:] != mrec[:-1])[0] + 1
    return float(np.sum((mrec[steps] - mrec[steps - 1]) * mpre[steps]))


def average_precision(scores: np.ndarray, tp: np.ndarray, num_gt: int) -> float:
    """All frames' prediction scores and TP flags, the total ground-truth count -> AP."""
    if num_gt == 0:
        return 0.0
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    tp = np.asarray(tp, dtype=bool)[order]
    cum_tp = np.cumsum(tp)
    cum_fp = np.cumsum(~tp)
    recall = cum_tp / num_gt
    precision = cum_tp / np.maximum(cum_tp + cum_fp, 1)
    return voc_ap(recall, precision)


class ApAccumulator:
    """Streaming AP: add frames one by one (the runtime's summary), read ``result()`` at the end."""

    def __init__(
        self,
        *,
        iou_thresholds: Sequence[float] = IOU_THRESHOLDS,
        range_m: Sequence[float] = DEFAULT_RANGE_M,
    ) -> None:
        if len(range_m) != 4 or not (range_m[0] < range_m[2] and range_m[1] < range_m[3]):
            raise EvaluationError(f"range_m must be (x_min, y_min, x_max, y_max), got {tuple(range_m)}")
        self.iou_thresholds = tuple(float(t) for t in iou_thresholds)
        self.range_m = tuple(float(v) for v in range_m)
        self.num_gt = 0
        self.num_frames = 0
        self._scores: dict[float, list[np.ndarray]] = {t: [] for t in self.iou_thresholds}
        self._tp: dict[float, list[np.ndarray]] = {t: [] for t in self.iou_thresholds}

    def add_frame(self, pred_boxes: np.ndarray, pred_scores: np.ndarray, gt_boxes: np.ndarray) -> None:
        """One frame: (P, 7) predictions with (P,) scores and (M, 7) ground truth, same frame."""
        pred_boxes = _boxes(pred_boxes, "pred_boxes")
        gt_boxes = _boxes(gt_boxes, "gt_boxes")
        pred_scores = np.asarray(pred_scores, dtype=np.float64).reshape(-1)
        if len(pred_scores) != len(pred_boxes):
            raise EvaluationError(f"{len(pred_boxes)} boxes but {len(pred_scores)} scores")
        keep = inside_range(pred_boxes, self.range_m)
        pred_boxes, pred_scores = pred_boxes[keep], pred_scores[keep]
        gt_boxes = gt_boxes[inside_range(gt_boxes, self.range_m)]
        self.num_gt += len(gt_boxes)
        self.num_frames += 1
        for t in self.iou_thresholds:
            scores, tp = match_frame(pred_boxes, pred_scores, gt_boxes, t)
            self._scores[t].append(scores)
            self._tp[t].append(tp)

    def result(self) -> dict[str, float]:
        """{"0.3": AP, "0.5": AP, "0.7": AP} (keys formatted as ``str(threshold)``)."""
        return {
            str(t): average_precision(
                np.concatenate(self._scores[t]) if self._scores[t] else np.zeros(0),
                np.concatenate(self._tp[t]) if self._tp[t] else np.zeros(0, dtype=bool),
                self.num_gt,
            )
            for t in self.iou_thresholds
        }


def evaluate(
    predictions: Sequence[tuple[np.ndarray, np.ndarray]],
    gt_boxes: Sequence[np.ndarray],
    *,
    iou_thresholds: Sequence[float] = IOU_THRESHOLDS,
    range_m: Sequence[float] = DEFAULT_RANGE_M,
) -> dict[str, float]:
    """Per-frame (boxes (P, 7), scores (P,)) predictions and (M, 7) ground truth -> {"0.3": AP, ...}.

    ``range_m`` is (x_min, y_min, x_max, y_max) in the ego frame; pass a smaller one
    when the model's grid is smaller than the default +-100 x +-40 m.
    A ``Detections`` tuple works as a prediction (boxes, scores).
    """
    if len(predictions) != len(gt_boxes):
        raise EvaluationError(f"{len(predictions)} prediction frames but {len(gt_boxes)} ground-truth frames")
    accumulator = ApAccumulator(iou_thresholds=iou_thresholds, range_m=range_m)
    for (boxes, scores), gt in zip(predictions, gt_boxes, strict=True):
        accumulator.add_frame(boxes, scores, gt)
    return accumulator.result()
