"""``CooperativeDataset``: a reader's frames as training samples (``perception.sample``).

It wraps a reader for a ``torch.utils.data.DataLoader``: it draws the partners (``train.max_agents``),
the partners' delay (``partner_delay_ms``: the partners of the pair k sweeps earlier, k drawn
uniformly from 0 to ``partner_delay_ms`` / the sweep period, as ``revqom eval --delay-ms`` pairs
them (``data.perturbation.partner_schedule``); the frame's own pair when there is no earlier
one), the partners' pose error (``pose_noise``: the transmitted poses' Gaussian error, augment.py
``perturb_partner_poses``), the augmentation, the partner dropout (with probability
``partner_dropout`` the sample keeps the ego alone, as the fusion node fuses when no partner
arrives) and the slice dropout (augment.py) from
generators seeded by (seed, epoch, index), so any sample can be reproduced, also after a resume, and
crops each cloud to the grid's range (what the voxelizer would drop anyway).

Partners: each sample keeps the ego and a random subset of the partners in range (``comm_range_m``):
how many is drawn uniformly from 1 to ``max_agents - 1`` (or to the partners in range, when fewer),
then which; they keep the reader's order. So one model sees every number of partners it may meet.
With at most one partner in range (DAIR-V2X-C, 1 + 1) nothing is drawn: the sample is the frame's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from torch.utils.data import Dataset

from revqom_nodes.data.dairv2x import CooperativeFrame
from revqom_nodes.data.perturbation import SWEEP_PERIOD_MS, partner_schedule
from revqom_nodes.perception.grid import BevGrid
from revqom_nodes.perception.sample import SceneSample, boxes_in_grid, crop_to_grid, frame_to_sample
from revqom_nodes.training.augment import (
    apply_transform,
    draw_slice_valid,
    draw_transform,
    perturb_partner_poses,
)
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
        pose_noise: tuple[float, float] = (0.0, 0.0),
        partner_delay_ms: float = 0.0,
    ) -> None:
        self.reader = reader
        self.grid = grid
        self.max_agents = max_agents
        self.comm_range_m = comm_range_m
        self.augment = augment
        self.seed = seed
        self.slice_dropout = slice_dropout
        self.partner_dropout = partner_dropout
        self.pose_noise = pose_noise
        self.epoch = 0
        self.delayed: list[dict[int, int]] = []  # per k = 1, 2, ...: ego frame -> the pair k sweeps earlier
        if partner_delay_ms > 0:
            stamps = [reader.timestamps_us(i) for i in range(len(reader))]  # type: ignore[attr-defined]
            sweeps = int(partner_delay_ms / SWEEP_PERIOD_MS + 0.5)
            self.delayed = [dict(partner_schedule(stamps, k * SWEEP_PERIOD_MS).pairs)
                            for k in range(1, sweeps + 1)]

    def set_epoch(self, epoch: int) -> None:
        """Pick the augmentation draws of ``epoch`` (call before iterating a new epoch)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, index: int) -> SceneSample:
        frame = self.reader[index]
        if self.delayed:
            rng = np.random.default_rng([self.seed, self.epoch, index, 5])
            k = int(rng.integers(0, len(self.delayed) + 1))
            earlier = self.delayed[k - 1].get(index) if k else None
            if earlier is not None:
                frame = replace(frame, agents=[frame.ego, *self.reader[earlier].agents[1:]])
        sample = frame_to_sample(frame, self.grid, max_agents=len(frame.agents),
                                 comm_range_m=self.comm_range_m)
        rng = np.random.default_rng([self.seed, self.epoch, index, 2])
        sample = choose_partners(sample, self.max_agents, rng)
        if any(self.pose_noise):
            rng = np.random.default_rng([self.seed, self.epoch, index, 4])
            sample = perturb_partner_poses(sample, *self.pose_noise, rng)
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            sample = apply_transform(sample, draw_transform(self.augment, rng))
            sample = sample._replace(gt_boxes=sample.gt_boxes[boxes_in_grid(sample.gt_boxes, self.grid)])
        if self.partner_dropout and np.random.default_rng([self.seed, self.epoch, index, 3]).random() \
                < self.partner_dropout:
            sample = sample._replace(points=sample.points[:1], T_ego_from_agent=sample.T_ego_from_agent[:1])
        if self.slice_dropout is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index, 1])
            valid = draw_slice_valid(len(sample.points), self.grid.bev_shape, self.slice_dropout, rng)
            sample = sample._replace(valid=valid)
        return sample._replace(points=[crop_to_grid(p, self.grid) for p in sample.points])


def choose_partners(sample: SceneSample, max_agents: int, rng: np.random.Generator) -> SceneSample:
    """The ego and a random subset of ``sample``'s partners, at most ``max_agents - 1`` (module
    docstring); the sample itself when it has at most one partner or ``max_agents`` is 1."""
    partners = len(sample.points) - 1
    if partners <= 1 and max_agents > partners:  # nothing to choose
        return sample
    cap = min(max_agents - 1, partners)
    count = int(rng.integers(1, cap + 1)) if cap > 0 else 0
    kept = [0, *sorted(int(i) + 1 for i in rng.choice(partners, size=count, replace=False))]
    return sample._replace(points=[sample.points[i] for i in kept],
                           T_ego_from_agent=sample.T_ego_from_agent[kept])


def collate_samples(batch: list[SceneSample]) -> list[SceneSample]:
    """DataLoader collate: keep the samples as a list (clouds differ in size)."""
    return batch
