"""Rigid transforms and 3D box geometry shared by data, evaluation and perception.

Conventions (one home for them):
- Poses are 4x4 homogeneous float64 matrices named by direction,
  ``T_dst_from_src``: ``p_dst = T_dst_from_src @ p_src``.
- Boxes are (M, 7) arrays ``[x, y, z, l, w, h, yaw]``: geometric centre in
  metres, length along the heading, yaw about +z in radians.
- Box corners are (M, 8, 3): 0-3 the bottom face, 4-7 the top face; in box
  coordinates each face runs (+l/2, +w/2), (+l/2, -w/2), (-l/2, -w/2),
  (-l/2, +w/2) (the DAIR-V2X ``world_8_points`` order).
"""

from __future__ import annotations

import math

import numpy as np

_FACE_SIGNS = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, -1.0], [-1.0, 1.0]])


def make_transform(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """(3, 3) rotation and (3,) translation -> (4, 4) float64 transform."""
    T = np.eye(4)
    T[:3, :3] = np.asarray(rotation, dtype=np.float64).reshape(3, 3)
    T[:3, 3] = np.asarray(translation, dtype=np.float64).reshape(3)
    return T


def rotation_z(yaw: float) -> np.ndarray:
    """(3, 3) rotation by ``yaw`` radians about +z."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def invert(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid (4, 4) transform, exact for rotation matrices."""
    R = T[:3, :3]
    out = np.eye(4)
    out[:3, :3] = R.T
    out[:3, 3] = -R.T @ T[:3, 3]
    return out


def yaw_of(T: np.ndarray) -> float:
    """Heading (radians) of the x axis of a (4, 4) transform, projected on the xy plane."""
    return float(np.arctan2(T[1, 0], T[0, 0]))


def transform_points(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply (4, 4) T to (N, 3+) points; extra columns (intensity) pass through."""
    points = np.asarray(points)
    out = points.copy()
    xyz = points[:, :3].astype(np.float64)
    out[:, :3] = (xyz @ T[:3, :3].T + T[:3, 3]).astype(points.dtype)
    return out


def box_corners(boxes: np.ndarray) -> np.ndarray:
    """(M, 7) boxes -> (M, 8, 3) corners in the documented order."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    x, y, z, l, w, h, yaw = boxes.T
    local_xy = _FACE_SIGNS[None] * np.stack([l, w], axis=-1)[:, None] / 2.0  # (M, 4, 2)
    cos, sin = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
    cx = local_xy[..., 0] * cos - local_xy[..., 1] * sin + x[:, None]
    cy = local_xy[..., 0] * sin + local_xy[..., 1] * cos + y[:, None]
    bottom = np.stack([cx, cy, np.broadcast_to((z - h / 2)[:, None], cx.shape)], axis=-1)
    top = bottom.copy()
    top[..., 2] = (z + h / 2)[:, None]
    return np.concatenate([bottom, top], axis=1)


def boxes_from_corners(corners: np.ndarray) -> np.ndarray:
    """(M, 8, 3) corners in the documented order -> (M, 7) boxes.

    Centre is the corner mean; l = |c0 - c3|, w = |c0 - c1|, h = mean top-bottom
    height; yaw from the direction c3 -> c0 (the heading).
    """
    corners = np.asarray(corners, dtype=np.float64).reshape(-1, 8, 3)
    centre = corners.mean(axis=1)
    heading = corners[:, 0, :2] - corners[:, 3, :2]
    length = np.linalg.norm(heading, axis=1)
    width = np.linalg.norm(corners[:, 0, :2] - corners[:, 1, :2], axis=1)
    height = (corners[:, 4:, 2] - corners[:, :4, 2]).mean(axis=1)
    yaw = np.arctan2(heading[:, 1], heading[:, 0])
    return np.column_stack([centre, length, width, height, yaw])


def wrap_angle(angle: np.ndarray) -> np.ndarray:
    """Angles (radians) wrapped into [-pi, pi)."""
    return (np.asarray(angle) + np.pi) % (2.0 * np.pi) - np.pi


def transform_boxes(T: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Move (M, 7) boxes by a (4, 4) transform whose rotation is about z only.

    Poses with roll or pitch (a tilted LiDAR) should go through
    ``boxes_from_corners(corners @ R.T + t)`` instead; for z-only rotations both agree.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    out = boxes.copy()
    out[:, :3] = boxes[:, :3] @ T[:3, :3].T + T[:3, 3]
    out[:, 6] = wrap_angle(boxes[:, 6] + yaw_of(T))
    return out


def quaternion_from_matrix(T: np.ndarray) -> np.ndarray:
    """Rotation part of a (4, 4) or (3, 3) matrix -> unit quaternion (4,) ``x, y, z, w`` (ROS order)."""
    R = np.asarray(T, dtype=np.float64)[:3, :3]
    trace = np.trace(R)
    if trace > 0.0:
        s = 2.0 * np.sqrt(trace + 1.0)
        q = [(R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s, 0.25 * s]
    else:
        i = int(np.argmax(np.diag(R)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + R[i, i] - R[j, j] - R[k, k])
        q = [0.0, 0.0, 0.0, (R[k, j] - R[j, k]) / s]
        q[i] = 0.25 * s
        q[j] = (R[j, i] + R[i, j]) / s
        q[k] = (R[k, i] + R[i, k]) / s
    q = np.asarray(q)
    return q / np.linalg.norm(q)


def matrix_from_quaternion(quaternion: np.ndarray, translation: np.ndarray | None = None) -> np.ndarray:
    """Quaternion (4,) ``x, y, z, w`` and optional (3,) translation -> (4, 4) float64 transform.

    Python floats, not numpy scalars: the fusion node's reception thread converts every slice's
    pose with it (numpy scalar arithmetic took 30 of a slice's 100 µs there)."""
    x, y, z, w = (float(v) for v in quaternion)
    norm = math.sqrt(x * x + y * y + z * z + w * w)
    x, y, z, w = x / norm, y / norm, z / norm, w / norm
    tx, ty, tz = (0.0, 0.0, 0.0) if translation is None else (float(v) for v in np.ravel(translation))
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w), tx],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w), ty],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y), tz],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )


def count_points_in_boxes(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Number of (N, 3+) points inside each of (M, 7) boxes (same frame) -> (M,) int64.

    Boxes rotate about z only; a point on a face counts as inside.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    xyz = np.asarray(points)[:, :3].astype(np.float64)
    order = np.argsort(xyz[:, 0], kind="stable")
    xs = xyz[order, 0]
    counts = np.zeros(len(boxes), dtype=np.int64)
    for m, (x, y, z, l, w, h, yaw) in enumerate(boxes):
        reach = 0.5 * np.hypot(l, w)
        lo = int(np.searchsorted(xs, x - reach, side="left"))
        hi = int(np.searchsorted(xs, x + reach, side="right"))
        if hi <= lo:
            continue
        local = xyz[order[lo:hi]] - (x, y, z)
        cos, sin = np.cos(yaw), np.sin(yaw)
        u = local[:, 0] * cos + local[:, 1] * sin
        v = -local[:, 0] * sin + local[:, 1] * cos
        inside = (np.abs(u) <= l / 2) & (np.abs(v) <= w / 2) & (np.abs(local[:, 2]) <= h / 2)
        counts[m] = int(np.count_nonzero(inside))
    return counts
