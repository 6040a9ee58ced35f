"""The common per-agent sample, and the adapter from the reader's ``CooperativeFrame`` to it.

One home for what training, evaluation and the runtime share about a cooperative frame:
``frame_to_sample`` keeps the ego and at most ``max_agents - 1`` other agents within
``comm_range_m`` of the ego (``in_comm_range``: the horizontal distance between the LiDARs),
expresses every agent's pose as ``T_ego_from_agent`` and the cooperative ground truth (vehicle
class) in the ego frame, kept where the box centre lies inside the model's BEV grid;
``crop_to_grid`` drops the points the voxelizer would drop anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch

from revqom_nodes.geometry import invert
from revqom_nodes.perception.grid import BevGrid

if TYPE_CHECKING:
    from revqom_nodes.data.dairv2x import CooperativeFrame
    from revqom_nodes.perception.detector import FrameInput

COMM_RANGE_M = 100.0  # default of TrainConfig.comm_range_m, and of model files that do not store it


class SceneSample(NamedTuple):
    """One cooperative training sample; geometry as in the module docstring."""

    frame_id: str
    points: list[np.ndarray]  # A clouds (N_a, 4) float32, own LiDAR frame, ego first
    T_ego_from_agent: np.ndarray  # (A, 4, 4) float64, entry 0 the identity
    gt_boxes: np.ndarray  # (M, 7) float64 in the ego frame
    valid: np.ndarray | None = None  # (A, H, W) bool cells that arrived, own grids; None: all


def ground_distance_m(T_ego_from_agent: np.ndarray) -> float:
    """(4, 4) relative pose -> metres between the agent's LiDAR and the ego's in the ego's ground
    plane (x and y; the height difference does not count)."""
    return float(np.hypot(T_ego_from_agent[0, 3], T_ego_from_agent[1, 3]))


def in_comm_range(T_ego_from_agent: np.ndarray, comm_range_m: float) -> bool:
    """(4, 4) relative pose -> whether the agent's LiDAR is within ``comm_range_m`` of the ego's
    in the ground plane (the partners a model was trained with, and the ones the runtime fuses)."""
    return ground_distance_m(T_ego_from_agent) <= comm_range_m


def boxes_in_grid(boxes: np.ndarray, grid: BevGrid) -> np.ndarray:
    """(M, 7) boxes -> (M,) bool: centre inside the grid's x and y ranges."""
    x, y = boxes[:, 0], boxes[:, 1]
    inside_x = (x >= grid.x_range_m[0]) & (x < grid.x_range_m[1])
    return inside_x & (y >= grid.y_range_m[0]) & (y < grid.y_range_m[1])


def crop_to_grid(points: np.ndarray, grid: BevGrid) -> np.ndarray:
    """(N, 4) points -> the ones inside the grid's x, y and z ranges (max exclusive)."""
    low = np.array([grid.x_range_m[0], grid.y_range_m[0], grid.z_range_m[0]], dtype=np.float32)
    high = np.array([grid.x_range_m[1], grid.y_range_m[1], grid.z_range_m[1]], dtype=np.float32)
    xyz = points[:, :3]
    return points[((xyz >= low) & (xyz < high)).all(axis=1)]


def sample_agents(frame: CooperativeFrame, *, max_agents: int, comm_range_m: float) -> list[int]:
    """Indices into ``frame.agents`` of the agents ``frame_to_sample`` keeps, ego (0) first."""
    T_ego_from_world = invert(frame.ego.T_world_from_lidar)
    kept = [0]
    for index, agent in enumerate(frame.agents[1:], start=1):
        if len(kept) == max_agents:
            break
        if in_comm_range(T_ego_from_world @ agent.T_world_from_lidar, comm_range_m):
            kept.append(index)
    return kept


def frame_to_sample(
    frame: CooperativeFrame, grid: BevGrid, *, max_agents: int, comm_range_m: float
) -> SceneSample:
    """A reader frame -> SceneSample (module docstring); the ego is always kept."""
    T_ego_from_world = invert(frame.ego.T_world_from_lidar)
    kept = [frame.agents[i] for i in sample_agents(frame, max_agents=max_agents, comm_range_m=comm_range_m)]
    points = [np.asarray(agent.points, dtype=np.float32)[:, :4] for agent in kept]
    poses = [np.eye(4)] + [T_ego_from_world @ agent.T_world_from_lidar for agent in kept[1:]]
    boxes = frame.boxes_in(frame.ego.T_world_from_lidar)
    return SceneSample(frame.frame_id, points, np.stack(poses), boxes[boxes_in_grid(boxes, grid)])


def to_frame_input(sample: SceneSample) -> FrameInput:
    """SceneSample -> the detector's FrameInput (float32 points, float64 poses)."""
    from revqom_nodes.perception.detector import make_frame_input

    return make_frame_input(sample.points, sample.T_ego_from_agent, sample.valid)


def batch_inputs(batch: Sequence[SceneSample]) -> tuple[list[FrameInput], list[torch.Tensor]]:
    """Samples -> (FrameInputs, ground-truth tensors (M_b, 7) float32) for ``detector(...)`` / ``loss``."""
    inputs = [to_frame_input(s) for s in batch]
    targets = [torch.as_tensor(s.gt_boxes, dtype=torch.float32).reshape(-1, 7) for s in batch]
    return inputs, targets
