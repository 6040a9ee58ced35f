"""``CooperativeDataset``: a reader's frames as training samples (``perception.sample``).

It wraps a reader for a ``torch.utils.data.DataLoader``: it draws the augmentation, the partner
dropout (with probability ``partner_dropout`` the sample keeps the ego alone, as the fusion node
fuses when no partner arrives) and the slice dropout (augment.py) from generators seeded by
(seed, epoch, index), so any sample can be reproduced, also after a resume, and crops each cloud
to the grid's range (what the voxelizer would drop anyway).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch.utils.data import Dataset

from revqom_nodes.data.dairv2x import CooperativeFrame
from revqom_nodes.perception.grid import BevGrid
from revqom_nodes.perception.sample import SceneSample, boxes_in_grid, crop_to_grid, frame_to_sample
from revqom_nodes.training.augment import apply_transform, draw_slice_valid, draw_transform
from revqom_nodes.training.config import AugmentConfig, SliceDropoutConfig


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
        partner_dropout: float = 0.0,
    ) -> None:
        self.reader = reader
        self.grid = grid
        self.max_agents = max_agents
        self.comm_range_m = comm_range_m
        self.augment = augment
        self.seed = seed
        self.slice_dropout = slice_dropout
        self.partner_dropout = partner_dropout
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
        if self.partner_dropout and np.random.default_rng([self.seed, self.epoch, index, 2]).random() \
                < self.partner_dropout:
            sample = sample._replace(points=sample.points[:1], T_ego_from_agent=sample.T_ego_from_agent[:1])
        if self.slice_dropout is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index, 1])
            valid = draw_slice_valid(len(sample.points), self.grid.bev_shape, self.slice_dropout, rng)
            sample = sample._replace(valid=valid)
        return sample._replace(points=[crop_to_grid(p, self.grid) for p in sample.points])


def collate_samples(batch: list[SceneSample]) -> list[SceneSample]:
    """DataLoader collate: keep the samples as a list (clouds differ in size)."""
    return batch
