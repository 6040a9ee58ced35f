"""Voxelizer: mean features, index order (z, y, x), range filtering, batching."""

import pytest
import torch

from revqom_nodes.perception.errors import PerceptionError
from revqom_nodes.perception.grid import BevGrid
from revqom_nodes.perception.voxelize import voxelize, voxelize_batch

GRID = BevGrid(x_range_m=(-1.6, 1.6), y_range_m=(-0.8, 0.8), z_range_m=(-1.0, 1.0),
               voxel_size_m=(0.4, 0.4, 0.5), bev_stride=2)


def test_points_in_one_voxel_are_averaged():
    points = torch.tensor([[0.05, 0.1, 0.1, 10.0], [0.15, 0.3, 0.4, 20.0]])
    voxels = voxelize(points, GRID)
    assert voxels.features.shape == (1, 4)
    torch.testing.assert_close(voxels.features[0], torch.tensor([0.1, 0.2, 0.25, 15.0]))
    assert voxels.num_points.tolist() == [2]
    # x index (0.05 + 1.6) / 0.4 = 4, y (0.1 + 0.8) / 0.4 = 2, z (0.1 + 1) / 0.5 = 2
    assert voxels.coords.tolist() == [[0, 2, 2, 4]]
    assert voxels.coords.dtype == torch.int32


def test_out_of_range_and_nan_points_are_dropped():
    points = torch.tensor(
        [
            [1.6, 0.0, 0.0, 1.0],  # x max is exclusive
            [0.0, -0.81, 0.0, 1.0],
            [0.0, 0.0, 1.5, 1.0],
            [float("nan"), 0.0, 0.0, 1.0],
            [-1.6, -0.8, -1.0, 1.0],  # the min corner is inside
        ]
    )
    voxels = voxelize(points, GRID)
    assert voxels.coords.tolist() == [[0, 0, 0, 0]]


def test_batch_index_and_sorted_order():
    a = torch.tensor([[1.0, 0.5, 0.0, 1.0], [-1.0, -0.5, 0.0, 1.0]])
    b = torch.tensor([[0.0, 0.0, 0.0, 2.0]])
    voxels = voxelize_batch([a, b], GRID)
    assert voxels.batch_size == 2
    assert voxels.coords[:, 0].tolist() == [0, 0, 1]
    flat = voxels.coords.long()
    keys = ((flat[:, 0] * 4 + flat[:, 1]) * 4 + flat[:, 2]) * 8 + flat[:, 3]
    assert torch.all(keys[1:] > keys[:-1])


def test_empty_cloud_gives_no_voxels():
    voxels = voxelize(torch.zeros(0, 4), GRID)
    assert voxels.features.shape == (0, 4) and voxels.coords.shape == (0, 4)


def test_bad_shape_is_rejected():
    with pytest.raises(PerceptionError, match=r"\(N, 4\)"):
        voxelize(torch.zeros(5, 3), GRID)
