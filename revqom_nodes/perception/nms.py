"""Greedy rotated non-maximum suppression on BEV boxes, vectorized torch on any device.

The result is that of the classic loop (visit boxes by decreasing score, keep a box
unless a kept box overlaps it by more than ``iou_threshold``), computed without it:

1. overlapping pairs: (higher, lower) score pairs whose IoU exceeds the threshold,
   measured exactly (``rotated_iou_aligned_torch``, the algorithm AP uses). On the
   CPU only the pairs whose intersection can exceed the threshold are measured: the
   intersection lies inside each box's rectangle cut by the other box's extent along
   that box's axes, so the smaller of those two areas bounds it, and pairs whose bound
   proves IoU <= threshold are left out. On CUDA every pair is measured (up to
   ``EVERY_PAIR_MAX_BOXES`` boxes): finding the few that matter costs the device
   nothing but the host dozens of small launches and waits, which dominated there;
2. the greedy outcome is the fixed point of "kept = not overlapped by a kept,
   higher-scoring box", reached from "all kept" in as many sweeps as the longest
   chain of suppressions (a few on real candidate sets).

On CUDA the host waits once, for the overlapping pairs, and sweeps to the fixed point itself.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from revqom_nodes.perception.errors import PerceptionError
from revqom_nodes.perception.iou import rotated_iou, rotated_iou_aligned_torch

_BOUND_MARGIN = 1e-6  # pairs are measured unless their IoU bound is this far under the threshold
EVERY_PAIR_MAX_BOXES = 1024  # on CUDA, every pair is measured up to this many boxes (524k pairs)


def _extent_overlap(centre: Tensor, half: Tensor, other_centre: Tensor, other_half: Tensor) -> Tensor:
    """Overlap length of two intervals given by centres and half lengths (broadcast), >= 0."""
    low = torch.maximum(centre - half, other_centre - other_half)
    high = torch.minimum(centre + half, other_centre + other_half)
    return (high - low).clamp(min=0.0)


def _intersection_bound(a: Tensor, b: Tensor) -> Tensor:
    """(P, 7) and (P, 7) boxes -> (P,) upper bound of their BEV intersection areas."""
    bounds = []
    for own, other in ((a, b), (b, a)):
        cos, sin = own[:, 6].cos(), own[:, 6].sin()
        dx, dy = other[:, 0] - own[:, 0], other[:, 1] - own[:, 1]
        turn = other[:, 6] - own[:, 6]
        c, s = turn.cos().abs(), turn.sin().abs()
        along = _extent_overlap(0.0, own[:, 3] / 2, dx * cos + dy * sin,
                                (other[:, 3] * c + other[:, 4] * s) / 2)
        across = _extent_overlap(0.0, own[:, 4] / 2, dy * cos - dx * sin,
                                 (other[:, 3] * s + other[:, 4] * c) / 2)
        bounds.append(along * across)
    return torch.minimum(bounds[0], bounds[1])


def _candidate_pairs(boxes: Tensor, iou_threshold: float) -> tuple[Tensor, Tensor]:
    """(M, 7) boxes sorted by score -> rows i < j of the pairs whose IoU may exceed the threshold."""
    radius = boxes[:, 3:5].norm(dim=1) / 2  # circumscribed circles: a cheap first cut
    x, order = boxes[:, 0].sort()
    # in x order, the boxes that may touch box k follow it within 2 * max radius: a band of columns
    end = torch.searchsorted(x, x + 2 * radius.max() * (1 + 1e-9), right=True)
    first = torch.arange(len(x), device=boxes.device)
    width = int((end - first).max())
    column = first[:, None] + torch.arange(1, max(width, 1), device=boxes.device)
    in_band = column < end[:, None]
    a, b = order[:, None].expand_as(column), order[column.clamp(max=len(x) - 1)]
    dx, dy = boxes[a, 0] - boxes[b, 0], boxes[a, 1] - boxes[b, 1]
    reach = (radius[a] + radius[b]) * (1 + 1e-9)
    close = in_band & (dx * dx + dy * dy <= reach * reach)
    a, b = a[close], b[close]
    i, j = torch.minimum(a, b), torch.maximum(a, b)
    bound = _intersection_bound(boxes[i], boxes[j])
    area = boxes[:, 3] * boxes[:, 4]
    # IoU <= bound / (area_i + area_j - bound); left out when that proves IoU < threshold - margin
    threshold = iou_threshold - _BOUND_MARGIN
    maybe = bound * (1 + threshold) >= threshold * (area[i] + area[j])
    return i[maybe], j[maybe]


def _overlapping_pairs(boxes: Tensor, iou_threshold: float, every_pair: bool) -> tuple[Tensor, Tensor]:
    """(M, 7) boxes sorted by score -> rows i < j of the pairs whose IoU exceeds the threshold;
    ``every_pair`` measures all M (M - 1) / 2 pairs, else only those the bound leaves in."""
    if every_pair:
        i, j = torch.triu_indices(len(boxes), len(boxes), 1, device=boxes.device)
    else:
        i, j = _candidate_pairs(boxes, iou_threshold)
    overlapped = rotated_iou_aligned_torch(boxes[i], boxes[j]) > iou_threshold
    return i[overlapped], j[overlapped]


def rotated_nms(
    boxes: Tensor, scores: Tensor, *, iou_threshold: float, max_detections: int | None = None
) -> Tensor:
    """(M, 7) boxes, (M,) scores -> indices of the kept boxes (K,) int64 on their device, by
    decreasing score.

    A box is suppressed when its BEV rotated IoU with a higher-scoring kept box
    exceeds ``iou_threshold``. Ties in score keep the earlier box. Boxes need
    positive l and w; the IoU is computed in float64.
    """
    if not 0.0 <= iou_threshold <= 1.0:
        raise PerceptionError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
    boxes = boxes.reshape(-1, 7).double()
    order = torch.sort(-scores.reshape(-1).double(), stable=True).indices
    if len(order) == 0:
        return order
    boxes = boxes[order]
    every_pair = boxes.is_cuda and len(boxes) <= EVERY_PAIR_MAX_BOXES
    i, j = torch.stack(_overlapping_pairs(boxes, iou_threshold, every_pair)).cpu()
    keep = torch.ones(len(order), dtype=torch.bool)
    hits = torch.zeros(len(order), dtype=torch.int32)
    while True:  # on the host: each sweep is a few small operations, cheaper there than launched
        suppressed = hits.zero_().index_add_(0, j, keep[i].int()) > 0
        if torch.equal(suppressed, ~keep):
            break
        keep = ~suppressed
    return order[keep.nonzero().squeeze(1)[:max_detections].to(order.device)]


def rotated_nms_numpy(
    boxes: np.ndarray, scores: np.ndarray, *, iou_threshold: float, max_detections: int | None = None
) -> np.ndarray:
    """The reference for ``rotated_nms`` (benchmark and tests): the classic loop over the full numpy
    IoU matrix. (M, 7) boxes, (M,) scores -> kept indices (K,) int64, by decreasing score."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    order = np.argsort(-np.asarray(scores, dtype=np.float64).reshape(-1), kind="stable")
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
