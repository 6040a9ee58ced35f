"""Points -> voxels with mean point features (the "mean VFE"), vectorized torch.

Works on any device, is deterministic (voxels come out sorted by their linear
index) and drops points outside the grid range or with NaN coordinates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from revqom_nodes.perception.errors import PerceptionError
from revqom_nodes.perception.grid import BevGrid

NUM_POINT_FEATURES = 4


class Voxels(NamedTuple):
    """Non-empty voxels of a batch of point clouds."""

    features: Tensor  # (N, 4) float32: mean x, y, z (metres) and intensity of the voxel's points
    coords: Tensor  # (N, 4) int32: [sample, z, y, x] voxel indices (spconv order)
    num_points: Tensor  # (N,) int64: points averaged into each voxel
    batch_size: int


def voxelize_batch(points: Sequence[Tensor], grid: BevGrid) -> Voxels:
    """One (N_b, 4) cloud ``x, y, z, intensity`` per sample -> voxels of the whole batch.

    Points outside ``grid``'s x, y, z ranges (max exclusive) are dropped.
    """
    if len(points) == 0:
        raise PerceptionError("voxelize_batch needs at least one point cloud")
    device = points[0].device
    nx, ny, nz = grid.voxel_grid_size
    low = torch.tensor([grid.x_range_m[0], grid.y_range_m[0], grid.z_range_m[0]], device=device)
    high = torch.tensor([grid.x_range_m[1], grid.y_range_m[1], grid.z_range_m[1]], device=device)
    size = torch.tensor(grid.voxel_size_m, device=device)
    counts = torch.tensor([nx, ny, nz], device=device)

    feats, keys = [], []
    for sample, cloud in enumerate(points):
        if cloud.dim() != 2 or cloud.shape[1] < NUM_POINT_FEATURES:
            raise PerceptionError(f"points must be (N, 4) x, y, z, intensity, got {tuple(cloud.shape)}")
        cloud = cloud[:, :NUM_POINT_FEATURES].to(device=device, dtype=torch.float32)
        xyz = cloud[:, :3]
        inside = ((xyz >= low) & (xyz < high)).all(dim=1)
        cloud, xyz = cloud[inside], xyz[inside]
        ijk = torch.minimum(((xyz - low) / size).floor().long(), counts - 1)  # (N, 3) x, y, z indices
        keys.append(((sample * nz + ijk[:, 2]) * ny + ijk[:, 1]) * nx + ijk[:, 0])
        feats.append(cloud)
    key = torch.cat(keys)
    feat = torch.cat(feats)

    unique, inverse, num = torch.unique(key, sorted=True, return_inverse=True, return_counts=True)
    sums = torch.zeros(unique.shape[0], NUM_POINT_FEATURES, device=device).index_add_(0, inverse, feat)
    mean = sums / num.unsqueeze(1).to(sums.dtype)
    x = unique % nx
    y = (unique // nx) % ny
    z = (unique // (nx * ny)) % nz
    sample = unique // (nx * ny * nz)
    coords = torch.stack([sample, z, y, x], dim=1).int()
    return Voxels(features=mean, coords=coords, num_points=num, batch_size=len(points))


def voxelize(points: Tensor, grid: BevGrid) -> Voxels:
    """One (N, 4) cloud -> voxels with batch_size 1."""
    return voxelize_batch([points], grid)
