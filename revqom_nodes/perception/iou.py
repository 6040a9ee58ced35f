"""BEV rotated IoU, shared by NMS (perception) and AP (evaluation).

Boxes are (M, 7) ``[x, y, z, l, w, h, yaw]``; the IoU is that of the bottom-face
rectangles (``box_corners(...)[:, :4, :2]``), as in the OpenCOOD protocol.
The intersection of two convex quadrilaterals is the convex hull of the
vertices of each inside the other and of the 16 edge crossings, ordered by
angle around their centroid and measured by the shoelace formula.

Two backends of that one algorithm, step for step (tests hold them within 1e-12):
numpy float64 (``rotated_iou``, ``rotated_iou_aligned``: AP), and torch float64
on any device without host syncs (``rotated_iou_aligned_torch``: NMS, which picks
the pairs to measure itself). Pairs whose axis-aligned bounds do not overlap are
skipped by ``rotated_iou``.
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


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def _inside(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """(P, n, 2) points, (P, 4, 2) convex polygons -> (P, n) inside or on the boundary."""
    edges = np.roll(polygon, -1, axis=1) - polygon  # (P, 4, 2)
    rel = points[:, :, None, :] - polygon[:, None, :, :]  # (P, n, 4, 2)
    side = _cross(edges[:, None], rel)  # (P, n, 4)
    return np.all(side >= -_EPS, axis=2) | np.all(side <= _EPS, axis=2)


def _edge_crossings(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(P, 4, 2) polygons -> (P, 16, 2) crossing points of their edges and (P, 16) validity."""
    r = (np.roll(a, -1, axis=1) - a)[:, :, None, :]  # (P, 4, 1, 2) edges of a
    s = (np.roll(b, -1, axis=1) - b)[:, None, :, :]  # (P, 1, 4, 2) edges of b
    qp = b[:, None, :, :] - a[:, :, None, :]  # (P, 4, 4, 2)
    denom = _cross(r, s)
    parallel = np.abs(denom) < _EPS
    safe = np.where(parallel, 1.0, denom)
    t = _cross(qp, s) / safe
    u = _cross(qp, r) / safe
    valid = ~parallel & (t >= -_EPS) & (t <= 1 + _EPS) & (u >= -_EPS) & (u <= 1 + _EPS)
    points = a[:, :, None, :] + t[..., None] * r
    return points.reshape(-1, 16, 2), valid.reshape(-1, 16)


def convex_intersection_area(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise areas of intersection of (P, 4, 2) and (P, 4, 2) convex quadrilaterals -> (P,)."""
    crossings, crossing_valid = _edge_crossings(a, b)
    points = np.concatenate([a, b, crossings], axis=1)  # (P, 24, 2)
    valid = np.concatenate([_inside(a, b), _inside(b, a), crossing_valid], axis=1)
    count = valid.sum(axis=1)
    centroid = (points * valid[..., None]).sum(axis=1) / np.maximum(count, 1)[:, None]
    rel = points - centroid[:, None, :]
    angle = np.where(valid, np.arctan2(rel[..., 1], rel[..., 0]), np.inf)
    order = np.argsort(angle, axis=1, kind="stable")
    rel = np.take_along_axis(rel, order[..., None], axis=1)
    valid = np.take_along_axis(valid, order, axis=1)
    rel = np.where(valid[..., None], rel, rel[:, :1, :])  # unused slots repeat the first vertex
    area = 0.5 * np.abs(_cross(rel, np.roll(rel, -1, axis=1)).sum(axis=1))
    return np.where(count >= 3, area, 0.0)


def rotated_iou_aligned(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """BEV IoU of matching rows of (P, 7) and (P, 7) boxes -> (P,)."""
    boxes_a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 7)
    boxes_b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 7)
    inter = convex_intersection_area(bev_corners(boxes_a), bev_corners(boxes_b))
    union = boxes_a[:, 3] * boxes_a[:, 4] + boxes_b[:, 3] * boxes_b[:, 4] - inter
    return np.where(union > 0, inter / np.maximum(union, _EPS), 0.0)


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
# Coordinates travel as separate x and y tensors (contiguous elementwise work on the CPU); each
# step is the numpy step above with the same arithmetic.
_FACE_SIGNS = ((1.0, 1.0, -1.0, -1.0), (1.0, -1.0, -1.0, 1.0))  # geometry.box_corners' order: x, y


def bev_corners_torch(boxes: Tensor) -> tuple[Tensor, Tensor]:
    """(M, 7) boxes -> bottom-face corners as x (M, 4) and y (M, 4), the arithmetic of ``bev_corners``."""
    signs = torch.tensor(_FACE_SIGNS, dtype=boxes.dtype).to(boxes.device, non_blocking=True)
    local_x, local_y = signs[0] * boxes[:, 3:4] / 2.0, signs[1] * boxes[:, 4:5] / 2.0
    cos, sin = boxes[:, 6:7].cos(), boxes[:, 6:7].sin()
    return local_x * cos - local_y * sin + boxes[:, 0:1], local_x * sin + local_y * cos + boxes[:, 1:2]


def _inside_torch(px: Tensor, py: Tensor, qx: Tensor, qy: Tensor) -> Tensor:
    """(P, n) points x, y and (P, 4) convex polygons x, y -> (P, n) inside or on the boundary."""
    ex, ey = qx.roll(-1, dims=1) - qx, qy.roll(-1, dims=1) - qy
    side = ex[:, None] * (py[:, :, None] - qy[:, None]) - ey[:, None] * (px[:, :, None] - qx[:, None])
    return (side >= -_EPS).all(dim=2) | (side <= _EPS).all(dim=2)


def rotated_iou_aligned_torch(boxes_a: Tensor, boxes_b: Tensor) -> Tensor:
    """BEV IoU of matching rows of (P, 7) and (P, 7) boxes -> (P,) float64, on their device."""
    boxes_a, boxes_b = boxes_a.reshape(-1, 7).double(), boxes_b.reshape(-1, 7).double()
    ax, ay = bev_corners_torch(boxes_a)
    bx, by = bev_corners_torch(boxes_b)
    # the 16 crossings of a's edges r (rows) with b's edges s (columns)
    rx, ry = (ax.roll(-1, dims=1) - ax)[:, :, None], (ay.roll(-1, dims=1) - ay)[:, :, None]
    sx, sy = (bx.roll(-1, dims=1) - bx)[:, None], (by.roll(-1, dims=1) - by)[:, None]
    qx, qy = bx[:, None] - ax[:, :, None], by[:, None] - ay[:, :, None]  # (P, 4, 4)
    denom = rx * sy - ry * sx
    parallel = denom.abs() < _EPS
    safe = torch.where(parallel, 1.0, denom)
    t = (qx * sy - qy * sx) / safe
    u = (qx * ry - qy * rx) / safe
    crossing = ~parallel & (t >= -_EPS) & (t <= 1 + _EPS) & (u >= -_EPS) & (u <= 1 + _EPS)
    px = torch.cat([ax, bx, (ax[:, :, None] + t * rx).flatten(1)], dim=1)  # (P, 24)
    py = torch.cat([ay, by, (ay[:, :, None] + t * ry).flatten(1)], dim=1)
    inside_b, inside_a = _inside_torch(ax, ay, bx, by), _inside_torch(bx, by, ax, ay)
    valid = torch.cat([inside_b, inside_a, crossing.flatten(1)], dim=1)
    count = valid.sum(dim=1)
    weight = valid.to(px.dtype)
    norm = count.clamp(min=1).to(px.dtype)
    rel_x = px - ((px * weight).sum(dim=1) / norm)[:, None]  # around the centroid of the valid points
    rel_y = py - ((py * weight).sum(dim=1) / norm)[:, None]
    angle = torch.where(valid, torch.atan2(rel_y, rel_x), torch.inf)
    order = angle.sort(dim=1, stable=True).indices
    rel_x, rel_y, valid = rel_x.gather(1, order), rel_y.gather(1, order), valid.gather(1, order)
    rel_x = torch.where(valid, rel_x, rel_x[:, :1])  # unused slots repeat the first vertex
    rel_y = torch.where(valid, rel_y, rel_y[:, :1])
    inter = 0.5 * (rel_x * rel_y.roll(-1, dims=1) - rel_y * rel_x.roll(-1, dims=1)).sum(dim=1).abs()
    inter = torch.where(count >= 3, inter, 0.0)
    union = boxes_a[:, 3] * boxes_a[:, 4] + boxes_b[:, 3] * boxes_b[:, 4] - inter
    return torch.where(union > 0, inter / union.clamp(min=_EPS), 0.0)
