"""SECOND residual box coding against anchors, and the direction-bin convention.

Boxes and anchors are (..., 7) ``[x, y, z, l, w, h, yaw]`` (docs/design.md). Deltas:
``dx = (x - xa) / da, dy = (y - ya) / da`` with ``da = sqrt(la^2 + wa^2)``,
``dz = (z - za) / ha``, ``dl = log(l / la)`` (same for w, h), ``dyaw = yaw - yawa``.
The regression loss compares yaw through sin(pred - target) (see head.py), which
cannot tell yaw from yaw + pi; a 2-bin direction classifier settles that.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

DIRECTION_OFFSET = math.pi / 4  # bin edges at offset and offset + pi, away from the anchor rotations
NUM_DIRECTION_BINS = 2


def limit_period(angle: Tensor, offset: float, period: float) -> Tensor:
    """Angles mapped into [-offset * period, (1 - offset) * period)."""
    return angle - torch.floor(angle / period + offset) * period


def encode_boxes(boxes: Tensor, anchors: Tensor) -> Tensor:
    """(..., 7) boxes and matching (..., 7) anchors -> (..., 7) regression targets."""
    xa, ya, za, la, wa, ha, ra = anchors.unbind(-1)
    xg, yg, zg, lg, wg, hg, rg = boxes.unbind(-1)
    diagonal = torch.sqrt(la**2 + wa**2)
    return torch.stack(
        [
            (xg - xa) / diagonal,
            (yg - ya) / diagonal,
            (zg - za) / ha,
            torch.log(lg / la),
            torch.log(wg / wa),
            torch.log(hg / ha),
            rg - ra,
        ],
        dim=-1,
    )


def decode_boxes(deltas: Tensor, anchors: Tensor) -> Tensor:
    """Inverse of ``encode_boxes``: (..., 7) deltas and anchors -> (..., 7) boxes."""
    xa, ya, za, la, wa, ha, ra = anchors.unbind(-1)
    dx, dy, dz, dl, dw, dh, dr = deltas.unbind(-1)
    diagonal = torch.sqrt(la**2 + wa**2)
    return torch.stack(
        [
            dx * diagonal + xa,
            dy * diagonal + ya,
            dz * ha + za,
            torch.exp(dl) * la,
            torch.exp(dw) * wa,
            torch.exp(dh) * ha,
            dr + ra,
        ],
        dim=-1,
    )


def direction_targets(yaw: Tensor) -> Tensor:
    """Yaw (radians) -> direction bin in {0, 1}: which half turn, starting at DIRECTION_OFFSET."""
    shifted = limit_period(yaw - DIRECTION_OFFSET, 0.0, 2 * math.pi)
    return torch.clamp(torch.floor(shifted / math.pi).long(), 0, NUM_DIRECTION_BINS - 1)


def apply_direction(yaw: Tensor, direction: Tensor) -> Tensor:
    """Yaw known modulo pi plus its direction bin -> yaw in [-pi, pi)."""
    base = limit_period(yaw - DIRECTION_OFFSET, 0.0, math.pi)
    full = base + DIRECTION_OFFSET + math.pi * direction.to(yaw.dtype)
    return limit_period(full, 0.5, 2 * math.pi)
