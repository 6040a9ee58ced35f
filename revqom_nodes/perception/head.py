"""Anchor-based single-class detection head on a BEV map.

Anchors sit at every BEV cell centre (grid.py convention), one per rotation in
``HeadConfig.anchor_rotations``, all of size ``anchor_size_m`` at height
``anchor_z_m``. Flattened anchor order is (row i, column j, rotation r), the
same order in which the head's outputs are flattened.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from revqom_nodes.perception.box_coding import NUM_DIRECTION_BINS
from revqom_nodes.perception.config import HeadConfig
from revqom_nodes.perception.grid import BevGrid

BOX_SIZE = 7
_PRIOR_PROBABILITY = 0.01


class HeadOutput(NamedTuple):
    """Raw head outputs for S maps, flattened over anchors (N = H * W * R)."""

    class_logits: Tensor  # (S, N)
    box_deltas: Tensor  # (S, N, 7), see box_coding.encode_boxes
    direction_logits: Tensor  # (S, N, 2)


def make_anchors(grid: BevGrid, head: HeadConfig) -> Tensor:
    """Anchors of ``grid`` -> (H * W * R, 7) float32, ordered (row, column, rotation)."""
    xs, ys = grid.cell_centres()
    height, width = grid.bev_shape
    rotations = torch.tensor(head.anchor_rotations, dtype=torch.float32)
    num_rot = len(head.anchor_rotations)
    y, x, r = torch.meshgrid(
        torch.as_tensor(ys, dtype=torch.float32), torch.as_tensor(xs, dtype=torch.float32), rotations,
        indexing="ij",
    )
    length, width_m, height_m = head.anchor_size_m
    shape = (height, width, num_rot)
    anchors = torch.stack(
        [
            x,
            y,
            torch.full(shape, head.anchor_z_m),
            torch.full(shape, length),
            torch.full(shape, width_m),
            torch.full(shape, height_m),
            r,
        ],
        dim=-1,
    )
    return anchors.reshape(-1, BOX_SIZE)


class AnchorHead(nn.Module):
    """BEV (S, C, H, W) -> ``blocks`` 3x3 conv blocks (spatial context after fusion) -> 1x1 convs ->
    HeadOutput: class logit, box deltas and direction logits per anchor."""

    def __init__(self, *, channels: int, num_rotations: int, blocks: int = 0) -> None:
        super().__init__()
        self.num_rotations = num_rotations
        layers: list[nn.Module] = []
        for _ in range(blocks):
            layers += [nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                       nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01), nn.ReLU()]
        self.blocks = nn.Sequential(*layers)
        self.classification = nn.Conv2d(channels, num_rotations, 1)
        self.regression = nn.Conv2d(channels, num_rotations * BOX_SIZE, 1)
        self.direction = nn.Conv2d(channels, num_rotations * NUM_DIRECTION_BINS, 1)
        nn.init.constant_(self.classification.bias, -math.log((1 - _PRIOR_PROBABILITY) / _PRIOR_PROBABILITY))
        nn.init.normal_(self.regression.weight, std=0.001)
        nn.init.zeros_(self.regression.bias)

    def forward(self, bev: Tensor) -> HeadOutput:
        num_maps = bev.shape[0]
        bev = self.blocks(bev)

        def flat(x: Tensor, size: int) -> Tensor:  # (S, R * size, H, W) -> (S, H * W * R, size)
            return x.permute(0, 2, 3, 1).reshape(num_maps, -1, size)

        return HeadOutput(
            class_logits=flat(self.classification(bev), 1).squeeze(-1),
            box_deltas=flat(self.regression(bev), BOX_SIZE),
            direction_logits=flat(self.direction(bev), NUM_DIRECTION_BINS),
        )
