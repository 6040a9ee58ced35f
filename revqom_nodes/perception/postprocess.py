"""Head outputs -> final boxes: score threshold, top-k, decoding, direction (``Candidates``), rotated NMS."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from revqom_nodes.geometry import transform_boxes
from revqom_nodes.perception.box_coding import apply_direction, decode_boxes
from revqom_nodes.perception.config import HeadConfig
from revqom_nodes.perception.errors import PerceptionError
from revqom_nodes.perception.nms import rotated_nms


class Detections(NamedTuple):
    """Final detections of one frame."""

    boxes: np.ndarray  # (M, 7) float32 [x, y, z, l, w, h, yaw], metres / radians
    scores: np.ndarray  # (M,) float32 in [0, 1], decreasing

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 7), np.float32), np.zeros((0,), np.float32))


class Candidates(NamedTuple):
    """One map's boxes before NMS, on the device the head ran on."""

    boxes: Tensor  # (M, 7) [x, y, z, l, w, h, yaw]
    scores: Tensor  # (M,) in [0, 1]


def suppress(candidates: Candidates, head: HeadConfig) -> Detections:
    """Rotated NMS of the candidates on their device -> the kept ones, copied to the host once as
    float32."""
    boxes, scores = candidates
    keep = rotated_nms(boxes, scores, iou_threshold=head.nms_iou, max_detections=head.max_detections)
    kept = torch.cat([boxes[keep].float(), scores[keep].float()[:, None]], dim=1).cpu().numpy()
    return Detections(np.ascontiguousarray(kept[:, :7]), np.ascontiguousarray(kept[:, 7]))


@torch.no_grad()
def select_candidates(
    class_logits: Tensor, box_deltas: Tensor, direction_logits: Tensor, anchors: Tensor, head: HeadConfig
) -> Candidates:
    """One map's (N,) logits, (N, 7) deltas, (N, 2) direction logits and (N, 7) anchors -> the
    anchors scoring at least the threshold (the ``pre_nms_top_k`` best), decoded."""
    scores = class_logits.sigmoid()
    candidates = torch.nonzero(scores >= head.score_threshold).squeeze(1)
    if candidates.numel() > head.pre_nms_top_k:
        top = scores[candidates].topk(head.pre_nms_top_k).indices
        candidates = candidates[top]
    boxes = decode_boxes(box_deltas[candidates].float(), anchors[candidates])
    direction = direction_logits[candidates].argmax(dim=1)
    boxes[:, 6] = apply_direction(boxes[:, 6], direction)
    return Candidates(boxes, scores[candidates])


def merge_detections(
    per_agent: Sequence[Detections], T_ego_from_agent: Sequence[np.ndarray], head: HeadConfig
) -> Detections:
    """Late fusion: each agent's Detections in its own frame -> one set in the ego frame (rotated NMS)."""
    if len(per_agent) != len(T_ego_from_agent):
        raise PerceptionError(f"{len(per_agent)} detection sets but {len(T_ego_from_agent)} transforms")
    pairs = zip(per_agent, T_ego_from_agent, strict=True)
    boxes = [transform_boxes(np.asarray(T, np.float64), d.boxes) for d, T in pairs]
    scores = [d.scores.astype(np.float64) for d in per_agent]
    if not boxes:
        return Detections.empty()
    merged = Candidates(torch.from_numpy(np.concatenate(boxes)), torch.from_numpy(np.concatenate(scores)))
    return suppress(merged, head)
