"""Warp into the ego grid: blobs land where the geometry says, coverage masks follow."""

import math

import numpy as np
import pytest
import torch

from revqom_nodes.geometry import transform_points
from revqom_nodes.perception.errors import PerceptionError
from revqom_nodes.perception.grid import BevGrid
from revqom_nodes.perception.warp import warp_to_ego

GRID = BevGrid(x_range_m=(-12.8, 12.8), y_range_m=(-12.8, 12.8), voxel_size_m=(0.4, 0.4, 1.0), bev_stride=2)


def pose(x: float, y: float, yaw: float) -> np.ndarray:
    T = np.eye(4)
    T[:2, :2] = [[math.cos(yaw), -math.sin(yaw)], [math.sin(yaw), math.cos(yaw)]]
    T[:2, 3] = [x, y]
    return T


def blob_map(x_m: float, y_m: float) -> torch.Tensor:
    """(1, 1, H, W) map with a 3 x 3 blob centred on the cell holding (x_m, y_m) in the agent's grid."""
    row, col = GRID.cell_of(x_m, y_m)
    bev = torch.zeros(1, 1, *GRID.bev_shape)
    bev[0, 0, row - 1 : row + 2, col - 1 : col + 2] = 1.0
    bev[0, 0, row, col] = 2.0
    return bev


@pytest.mark.parametrize(
    ("T_ego_from_agent", "blob_in_agent"),
    [
        (pose(4.0, 0.0, 0.0), (2.0, 3.0)),
        (pose(0.0, -5.0, 0.0), (-3.0, 6.0)),
        (pose(0.0, 0.0, math.pi / 2), (6.0, 1.0)),
        (pose(0.0, 0.0, -0.7), (-4.0, -5.0)),
        (pose(3.0, 2.5, 2.4), (5.0, -1.5)),
    ],
)
def test_blob_lands_where_the_geometry_says(T_ego_from_agent, blob_in_agent):
    warped = warp_to_ego(blob_map(*blob_in_agent), torch.from_numpy(T_ego_from_agent[None]), GRID)
    peak = int(torch.argmax(warped.features[0, 0]))
    row, col = divmod(peak, GRID.bev_shape[1])
    x_e, y_e = transform_points(T_ego_from_agent, np.array([[*blob_in_agent, 0.0]]))[0, :2]
    want_row, want_col = GRID.cell_of(x_e, y_e)
    assert abs(row - want_row) <= 1 and abs(col - want_col) <= 1


def test_identity_keeps_the_map_and_full_coverage():
    bev = torch.randn(2, 3, *GRID.bev_shape)
    warped = warp_to_ego(bev, np.stack([np.eye(4), np.eye(4)]), GRID)
    torch.testing.assert_close(warped.features, bev, atol=1e-5, rtol=1e-5)
    assert warped.valid.all()


def test_coverage_of_a_translated_agent():
    """An agent 10 m ahead covers ego x in [-2.8, 22.8] m: columns centred left of -2.8 are invalid."""
    warped = warp_to_ego(torch.ones(1, 4, *GRID.bev_shape), pose(10.0, 0.0, 0.0)[None], GRID)
    xs, _ = GRID.cell_centres()
    covered = warped.valid[0].all(dim=0).numpy()  # per column
    np.testing.assert_array_equal(covered[np.abs(xs + 2.8) > 0.8], xs[np.abs(xs + 2.8) > 0.8] > -2.8)
    assert not warped.valid[0, :, xs < -3.6].any()
    assert (warped.features[0][:, ~warped.valid[0]] == 0).all()


def test_input_validity_mask_is_carried():
    valid = torch.ones(1, *GRID.bev_shape, dtype=torch.bool)
    valid[0, :, :10] = False  # lost cells of the agent's own grid
    warped = warp_to_ego(torch.ones(1, 2, *GRID.bev_shape), np.eye(4)[None], GRID, valid)
    assert torch.equal(warped.valid, valid)
    assert (warped.features[0, :, :, :10] == 0).all()


def test_mismatched_inputs_are_rejected():
    with pytest.raises(PerceptionError, match="transforms"):
        warp_to_ego(torch.ones(2, 1, *GRID.bev_shape), np.eye(4)[None], GRID)
    with pytest.raises(PerceptionError, match="features"):
        warp_to_ego(torch.ones(1, 1, 8, 8), np.eye(4)[None], GRID)
