"""BEV rotated IoU, shared by NMS (perception) and AP (evaluation).

Boxes are (M, 7) ``[x, y, z, l, w, h, yaw]``; the IoU is that of the bottom-face
rectangles (``box_corners(...)[:, :4, :2]``), as in the OpenCOOD protocol.

The intersection area of two rectangles a and b is the line integral (Green's theorem)
``0.5 * sum(cross(p, d))`` over its boundary, which is made of the parts of a's edges inside b
and of b's edges inside a. Each part is found by clipping the edge to the other rectangle in
that rectangle's own frame, where it is axis-aligned (Liang-Barsky: two slabs, no polygon to
build, no vertices to sort), and an edge p + t d kept for t in [t0, t1] adds
``0.5 * (t1 - t0) * cross(p, d)``. Edges that lie on each other count once: a's edge where it
runs the same way as b's, b's never.

One implementation, torch float64 on any device without host syncs
(``rotated_iou_aligned_torch``: NMS, which picks the pairs to measure itself); the numpy entry
points (``rotated_iou``, ``rotated_iou_aligned``: AP) run it on the CPU. ``rotated_iou``
skips pairs whose axis-aligned bounds do not overlap.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from revqom_nodes.geometry import box_corners

_EPS = 1e-9
_CHUNK_PAIRS = 65536


def bev_corners(boxes: np.ndarray) -> np.ndarray:
    """(M, 7) boxes -> (M, 4, 2) bottom-face corners in the xy plane."""
    return box_corners(boxes)[:, :4, :2]


def rotated_iou_aligned(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """BEV IoU of matching rows of (P, 7) and (P, 7) boxes -> (P,) float64."""
    boxes_a = torch.from_numpy(np.asarray(boxes_a, dtype=np.float64).reshape(-1, 7))
    boxes_b = torch.from_numpy(np.asarray(boxes_b, dtype=np.float64).reshape(-1, 7))
    return rotated_iou_aligned_torch(boxes_a, boxes_b).numpy()


def rotated_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """BEV IoU of every pair of (M, 7) and (N, 7) boxes -> (M, N) float64."""
    boxes_a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 7)
    boxes_b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 7)
    out = np.zeros((len(boxes_a), len(boxes_b)))
    if out.size == 0:
        return out
    corners_a, corners_b = bev_corners(boxes_a), bev_corners(boxes_b)
    low_a, high_a = corners_a.min(axis=1), corners_a.max(axis=1)
    low_b, high_b = corners_b.min(axis=1), corners_b.max(axis=1)
    overlap = np.all(
        (low_a[:, None] <= high_b[None] + _EPS) & (low_b[None] <= high_a[:, None] + _EPS), axis=2
    )
    rows, cols = np.nonzero(overlap)
    for start in range(0, len(rows), _CHUNK_PAIRS):
        i, j = rows[start : start + _CHUNK_PAIRS], cols[start : start + _CHUNK_PAIRS]
        out[i, j] = rotated_iou_aligned(boxes_a[i], boxes_b[j])
    return out


# ---- torch ------------------------------------------------------------------------------------
# Coordinates travel as separate x and y tensors (contiguous elementwise work on the CPU).
_FACE_SIGNS = ((1.0, 1.0, -1.0, -1.0), (1.0, -1.0, -1.0, 1.0))  # geometry.box_corners' order: x, y


def bev_corners_torch(boxes: Tensor) -> tuple[Tensor, Tensor]:
    """(M, 7) boxes -> bottom-face corners as x (M, 4) and y (M, 4), the arithmetic of ``bev_corners``
    (clockwise: front left, front right, rear right, rear left)."""
    signs = torch.tensor(_FACE_SIGNS, dtype=boxes.dtype).to(boxes.device, non_blocking=True)
    local_x, local_y = signs[0] * boxes[:, 3:4] / 2.0, signs[1] * boxes[:, 4:5] / 2.0
    cos, sin = boxes[:, 6:7].cos(), boxes[:, 6:7].sin()
    return local_x * cos - local_y * sin + boxes[:, 0:1], local_x * sin + local_y * cos + boxes[:, 1:2]


def _in_frame(x: Tensor, y: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
    """(P, 4) points x, y -> the same points in the frames of (P, 7) boxes (centre, yaw)."""
    dx, dy = x - boxes[:, 0:1], y - boxes[:, 1:2]
    cos, sin = boxes[:, 6:7].cos(), boxes[:, 6:7].sin()
    return dx * cos + dy * sin, dy * cos - dx * sin


def _inside_fraction(x: Tensor, y: Tensor, half_l: Tensor, half_w: Tensor, *, shared_edges: bool) -> Tensor:
    """A clockwise quadrilateral's corners x, y (P, 4) in a rectangle's frame, the rectangle
    [-half_l, half_l] x [-half_w, half_w] ((P, 1) each) -> (P, 4) the fraction of each edge
    (corner k to k + 1) inside the rectangle. An edge on the rectangle's boundary counts when
    ``shared_edges`` and it runs the way the rectangle's own (clockwise) edge there does."""
    dx, dy = x.roll(-1, dims=1) - x, y.roll(-1, dims=1) - y
    start, end = torch.zeros_like(x), torch.ones_like(x)
    blocked = torch.zeros_like(x, dtype=torch.bool)
    # per slab: position, direction, half width, the other direction, and the sign that makes
    # (side * other direction) negative where the edge runs as the rectangle's own edge on that side
    for p, d, half, other_d, sense in ((x, dx, half_l, dy, -1.0), (y, dy, half_w, dx, 1.0)):
        parallel = d.abs() <= _EPS
        safe = torch.where(parallel, 1.0, d)
        low, high = (-half - p) / safe, (half - p) / safe
        start = torch.maximum(start, torch.where(parallel, 0.0, torch.minimum(low, high)))
        end = torch.minimum(end, torch.where(parallel, 1.0, torch.maximum(low, high)))
        gap = p.abs() - half
        on_side = parallel & (gap.abs() <= _EPS)
        if shared_edges:
            on_side = on_side & (sense * p.sign() * other_d <= 0)
        blocked = blocked | (parallel & (gap > _EPS)) | on_side
    return torch.where(blocked, 0.0, (end - start).clamp(min=0.0))


def rotated_iou_aligned_torch(boxes_a: Tensor, boxes_b: Tensor) -> Tensor:
    """BEV IoU of matching rows of (P, 7) and (P, 7) boxes -> (P,) float64, on their device."""
    boxes_a, boxes_b = boxes_a.reshape(-1, 7).double(), boxes_b.reshape(-1, 7).double()
    half_la, half_wa = boxes_a[:, 3:4] / 2, boxes_a[:, 4:5] / 2
    half_lb, half_wb = boxes_b[:, 3:4] / 2, boxes_b[:, 4:5] / 2
    # the boundary integral in b's frame: a's edges clipped by b, then b's own edges clipped by a
    # (measured in a's frame; in b's frame each of b's edges has cross(p, d) = -2 * l * w / 4)
    x, y = _in_frame(*bev_corners_torch(boxes_a), boxes_b)
    dx, dy = x.roll(-1, dims=1) - x, y.roll(-1, dims=1) - y
    inside_b = _inside_fraction(x, y, half_lb, half_wb, shared_edges=True)
    a_edges = 0.5 * (inside_b * (x * dy - y * dx)).sum(dim=1)
    x, y = _in_frame(*bev_corners_torch(boxes_b), boxes_a)
    inside_a = _inside_fraction(x, y, half_la, half_wa, shared_edges=False)
    b_edges = -(half_lb * half_wb)[:, 0] * inside_a.sum(dim=1)
    inter = (a_edges + b_edges).abs()
    union = boxes_a[:, 3] * boxes_a[:, 4] + boxes_b[:, 3] * boxes_b[:, 4] - inter
    return torch.where(union > 0, inter / union.clamp(min=_EPS), 0.0)
