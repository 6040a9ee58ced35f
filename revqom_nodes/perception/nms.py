"""Greedy rotated non-maximum suppression on BEV boxes (IoU from ``evaluation.iou``)."""

from __future__ import annotations

import numpy as np

from revqom_nodes.perception.iou import rotated_iou


def rotated_nms(
    boxes: np.ndarray, scores: np.ndarray, *, iou_threshold: float, max_detections: int | None = None
) -> np.ndarray:
    """(M, 7) boxes, (M,) scores -> indices of the kept boxes (K,) int64, by decreasing score.

    A box is suppressed when its BEV rotated IoU with a higher-scoring kept box
    exceeds ``iou_threshold``. Ties in score keep the earlier box.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    iou = rotated_iou(boxes[order], boxes[order])
    suppressed = np.zeros(len(order), dtype=bool)
    keep: list[int] = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        if max_detections is not None and len(keep) >= max_detections:
            break
        suppressed |= iou[i] > iou_threshold
    return order[np.asarray(keep, dtype=np.int64)]
