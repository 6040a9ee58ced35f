"""Dataset statistics: sweep sizes, objects per frame and how much cooperation matters.

``cooperation_fraction`` is the share of ground-truth vehicles inside the evaluation
range around the ego (all 8 corners within x +-100 m, y +-40 m of the ego LiDAR) that
have fewer than ``min_points`` ego LiDAR points but at least ``min_points``
infrastructure points: vehicles only cooperation can detect.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from revqom_nodes.data.dairv2x import INFRASTRUCTURE, DairV2XReader
from revqom_nodes.geometry import box_corners, count_points_in_boxes

EVAL_RANGE_M: tuple[tuple[float, float], tuple[float, float]] = ((-100.0, 100.0), (-40.0, 40.0))


def in_range(boxes: np.ndarray, eval_range: tuple[tuple[float, float], tuple[float, float]]) -> np.ndarray:
    """(M, 7) boxes in an agent's frame -> (M,) bool, all 8 corners inside the (x, y) range."""
    corners = box_corners(boxes)
    (x_lo, x_hi), (y_lo, y_hi) = eval_range
    x, y = corners[..., 0], corners[..., 1]
    return ((x >= x_lo) & (x <= x_hi) & (y >= y_lo) & (y <= y_hi)).all(axis=1)


def dataset_stats(
    root: str | Path,
    split: str = "all",
    *,
    max_frames: int | None = None,
    min_points: int = 5,
    eval_range: tuple[tuple[float, float], tuple[float, float]] = EVAL_RANGE_M,
    progress: bool = True,
) -> dict:
    """Statistics of a DAIR-V2X-C root as a JSON-ready dict (see the module docstring)."""
    reader = DairV2XReader(root, split)
    count = len(reader) if max_frames is None else min(len(reader), max_frames)
    vehicle_points, infra_points, objects, in_range_counts, delays = [], [], [], [], []
    ego_points_all, infra_points_all = [], []
    for i in tqdm(range(count), desc="stats", unit="frame", disable=not progress):
        frame = reader[i]
        ego, infra = frame.ego, frame.agent(INFRASTRUCTURE)
        vehicle_points.append(len(ego.points))
        infra_points.append(len(infra.points))
        objects.append(len(frame.boxes_world))
        delays.append(abs(infra.timestamp_us - ego.timestamp_us) / 1000.0)
        boxes_ego = frame.boxes_in(ego.T_world_from_lidar)
        keep = in_range(boxes_ego, eval_range)
        in_range_counts.append(int(keep.sum()))
        ego_points_all.append(count_points_in_boxes(ego.points, boxes_ego[keep]))
        boxes_infra = frame.boxes_in(infra.T_world_from_lidar)[keep]
        infra_points_all.append(count_points_in_boxes(infra.points, boxes_infra))
    ego_hits = np.concatenate(ego_points_all) if ego_points_all else np.zeros(0, np.int64)
    infra_hits = np.concatenate(infra_points_all) if infra_points_all else np.zeros(0, np.int64)
    total = max(len(ego_hits), 1)
    ego_seen, infra_seen = ego_hits >= min_points, infra_hits >= min_points

    def median(values: list[int]) -> float:
        return float(np.median(values)) if values else 0.0

    return {
        "root": str(root),
        "split": split,
        "frames": count,
        "points_per_sweep": {"vehicle": median(vehicle_points), "infrastructure": median(infra_points)},
        "objects_per_frame": float(np.mean(objects)) if objects else 0.0,
        "objects_in_range_per_frame": float(np.mean(in_range_counts)) if in_range_counts else 0.0,
        "vehicles_in_range": len(ego_hits),
        "ego_visible_fraction": float(ego_seen.sum() / total),
        "infrastructure_visible_fraction": float(infra_seen.sum() / total),
        "invisible_fraction": float((~ego_seen & ~infra_seen).sum() / total),
        "cooperation_fraction": float((~ego_seen & infra_seen).sum() / total),
        "min_points": min_points,
        "eval_range_m": {"x": list(eval_range[0]), "y": list(eval_range[1])},
        "infrastructure_delay_ms_median": median(delays),
    }
