"""Adapter from the reader's ``CooperativeFrame`` to the detector's inputs and ego-frame targets.

``frame_to_sample`` keeps the ego and at most ``max_agents - 1`` other agents whose LiDAR is
within ``comm_range_m`` of the ego's (in the ground plane), expresses every agent's pose as
``T_ego_from_agent`` and the cooperative ground truth (vehicle class) in the ego frame, kept
where the box centre lies inside the model's BEV grid. ``CooperativeDataset`` wraps a reader
for a ``torch.utils.data.DataLoader``: it draws the augmentation and the slice dropout
(augment.py) from generators seeded by (seed, epoch, index), so any sample can be
reproduced, also after a resume, and crops each cloud to the grid's range (what the
voxelizer would drop anyway).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from revqom_nodes.data.dairv2x import CooperativeFrame
from revqom_nodes.data.transforms import invert
from revqom_nodes.perception.detector import FrameInput, make_frame_input
from revqom_nodes.perception.grid import BevGrid
from revqom_nodes.training.augment import SceneSample, apply_transform, draw_slice_valid, draw_transform
from revqom_nodes.training.config import AugmentConfig, SliceDropoutConfig


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


def frame_to_sample(
    frame: CooperativeFrame, grid: BevGrid, *, max_agents: int, comm_range_m: float
) -> SceneSample:
    """A reader frame -> SceneSample (module docstring); the ego is always kept."""
    T_ego_from_world = invert(frame.ego.T_world_from_lidar)
    points, poses = [], []
    for agent in frame.agents:
        if len(points) == max_agents:
            break
        T = T_ego_from_world @ agent.T_world_from_lidar
        if points and float(np.hypot(T[0, 3], T[1, 3])) > comm_range_m:
            continue
        points.append(np.asarray(agent.points, dtype=np.float32)[:, :4])
        poses.append(T)
    poses[0] = np.eye(4)
    boxes = frame.boxes_in(frame.ego.T_world_from_lidar)
    return SceneSample(frame.frame_id, points, np.stack(poses), boxes[boxes_in_grid(boxes, grid)])


def to_frame_input(sample: SceneSample) -> FrameInput:
    """SceneSample -> the detector's FrameInput (float32 points, float64 poses)."""
    return make_frame_input(sample.points, sample.T_ego_from_agent, sample.valid)


class CooperativeDataset(Dataset):
    """Samples of a reader (anything indexable giving CooperativeFrame), optionally augmented."""

    def __init__(
        self,
        reader: Sequence[CooperativeFrame],
        grid: BevGrid,
        *,
        max_agents: int,
        comm_range_m: float,
        augment: AugmentConfig | None,
        seed: int = 0,
        slice_dropout: SliceDropoutConfig | None = None,
    ) -> None:
        self.reader = reader
        self.grid = grid
        self.max_agents = max_agents
        self.comm_range_m = comm_range_m
        self.augment = augment
        self.seed = seed
        self.slice_dropout = slice_dropout
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Pick the augmentation draws of ``epoch`` (call before iterating a new epoch)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, index: int) -> SceneSample:
        sample = frame_to_sample(
            self.reader[index], self.grid, max_agents=self.max_agents, comm_range_m=self.comm_range_m
        )
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            sample = apply_transform(sample, draw_transform(self.augment, rng))
            sample = sample._replace(gt_boxes=sample.gt_boxes[boxes_in_grid(sample.gt_boxes, self.grid)])
        if self.slice_dropout is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index, 1])
            valid = draw_slice_valid(len(sample.points), self.grid.bev_shape, self.slice_dropout, rng)
            sample = sample._replace(valid=valid)
        return sample._replace(points=[crop_to_grid(p, self.grid) for p in sample.points])


def collate_samples(batch: list[SceneSample]) -> list[SceneSample]:
    """DataLoader collate: keep the samples as a list (clouds differ in size)."""
    return batch


def batch_inputs(batch: Sequence[SceneSample]) -> tuple[list[FrameInput], list[torch.Tensor]]:
    """Samples -> (FrameInputs, ground-truth tensors (M_b, 7) float32) for ``detector(...)`` / ``loss``."""
    inputs = [to_frame_input(s) for s in batch]
    targets = [torch.as_tensor(s.gt_boxes, dtype=torch.float32).reshape(-1, 7) for s in batch]
    return inputs, targets
