"""Warp agents' BEV maps into the ego grid from their relative poses.

Every map is centred on its own LiDAR origin (see ``grid.py``). For each ego cell
centre p_ego the warp samples the agent's map at p_agent = T_agent_from_ego p_ego,
using the 2D rigid part (x, y, yaw) of T_agent_from_ego, with translations
normalised by the half extent of the map (``F.affine_grid`` convention:
-1 and +1 are the outer edges of the map, x along the columns, y along the rows).
Sampling is bilinear with zero padding; a validity mask travels with the features.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from revqom_nodes.perception.errors import PerceptionError
from revqom_nodes.perception.grid import BevGrid

VALID_THRESHOLD = 0.5  # a warped cell is valid where more than half its bilinear weight is valid


class WarpedBev(NamedTuple):
    """Agents' maps resampled on the ego grid."""

    features: Tensor  # (A, C, H, W), zero where the agent has no coverage
    valid: Tensor  # (A, H, W) bool: the agent covers the cell (and its data there is valid)


def as_transforms(T_ego_from_agent: Tensor | np.ndarray, device: torch.device | None = None) -> Tensor:
    """(A, 4, 4) or a sequence of (4, 4) poses -> (A, 4, 4) float64 tensor."""
    if isinstance(T_ego_from_agent, Tensor):
        T = T_ego_from_agent.to(dtype=torch.float64)
    else:
        T = torch.as_tensor(np.asarray(T_ego_from_agent, dtype=np.float64))
    if device is not None:  # host to device without waiting for the device's queue
        T = T.to(device, non_blocking=torch.device(device).type != "cpu")
    if T.dim() != 3 or T.shape[1:] != (4, 4):
        raise PerceptionError(f"T_ego_from_agent must be (A, 4, 4), got {tuple(T.shape)}")
    return T


def affine_theta(T_ego_from_agent: Tensor, grid: BevGrid) -> Tensor:
    """(A, 4, 4) float64 T_ego_from_agent -> (A, 2, 3) float32 ``affine_grid`` matrices."""
    R = T_ego_from_agent[:, :3, :3]
    t = T_ego_from_agent[:, :3, 3:]
    R_inv = R.transpose(1, 2)
    t_inv = -(R_inv @ t)[:, :2, 0]  # translation of T_agent_from_ego, metres
    yaw = torch.atan2(R_inv[:, 1, 0], R_inv[:, 0, 0])  # yaw of T_agent_from_ego
    cos, sin = torch.cos(yaw), torch.sin(yaw)
    hx, hy = grid.half_extent_m
    theta = torch.stack(
        [
            torch.stack([cos, -sin * hy / hx, t_inv[:, 0] / hx], dim=1),
            torch.stack([sin * hx / hy, cos, t_inv[:, 1] / hy], dim=1),
        ],
        dim=1,
    )
    return theta.float()


def warp_to_ego(
    features: Tensor,
    T_ego_from_agent: Tensor | np.ndarray,
    grid: BevGrid,
    valid: Tensor | None = None,
) -> WarpedBev:
    """(A, C, H, W) maps in each agent's own grid -> the same maps on the ego grid.

    ``valid``: optional (A, H, W) bool per-cell validity in each agent's own grid
    (e.g. cells lost in transport); all ones when omitted.
    """
    if features.dim() != 4 or features.shape[2:] != grid.bev_shape:
        raise PerceptionError(f"features must be (A, C, {grid.bev_shape}), got {tuple(features.shape)}")
    num_agents = features.shape[0]
    T = as_transforms(T_ego_from_agent, features.device)
    if T.shape[0] != num_agents:
        raise PerceptionError(f"{num_agents} maps but {T.shape[0]} transforms")
    if valid is None:
        mask = features.new_ones(num_agents, 1, *grid.bev_shape)
    else:
        if valid.shape != (num_agents, *grid.bev_shape):
            raise PerceptionError(f"valid must be (A, H, W) = {(num_agents, *grid.bev_shape)}, "
                                  f"got {tuple(valid.shape)}")
        mask = valid.to(features.dtype).unsqueeze(1)
        features = features * mask
    theta = affine_theta(T, grid).to(features.device)
    sampling = F.affine_grid(theta, [num_agents, 1, *grid.bev_shape], align_corners=False)
    # Features and mask sampled apart (each channel on its own, the same values as sampled
    # together): no concatenated copy of every map
    warped = F.grid_sample(features, sampling, mode="bilinear", padding_mode="zeros", align_corners=False)
    coverage = F.grid_sample(mask, sampling, mode="bilinear", padding_mode="zeros", align_corners=False)
    out_valid = coverage[:, 0] > VALID_THRESHOLD
    return WarpedBev(features=warped * out_valid.unsqueeze(1).to(warped.dtype), valid=out_valid)
