"""BevGrid: derived sizes, validation, and the BEV axis convention (row along +y, column along +x)."""

import numpy as np
import pytest

from revqom_nodes.perception.errors import PerceptionError
from revqom_nodes.perception.grid import BevGrid, cell_count


def test_cell_count_exact_and_rejects_fractions():
    assert cell_count((-51.2, 51.2), 0.4) == 256
    assert cell_count((-8.0, 2.0), 0.5) == 20
    with pytest.raises(PerceptionError, match="whole multiple"):
        cell_count((-51.2, 51.2), 0.3)
    with pytest.raises(PerceptionError, match="max > min"):
        cell_count((1.0, 1.0), 0.1)


def test_default_cpu_grid():
    grid = BevGrid()
    assert grid.voxel_grid_size == (256, 256, 10)
    assert grid.bev_shape == (128, 128)
    assert grid.cell_size_m == pytest.approx(0.8)
    assert grid.num_downsamplings == 1


def test_paper_grid_is_expressible():
    grid = BevGrid.from_dict(
        {
            "x_range_m": [-102.4, 102.4],
            "y_range_m": [-102.4, 102.4],
            "z_range_m": [-10.0, 6.0],
            "voxel_size_m": [0.2, 0.2, 0.4],
            "bev_stride": 8,
        }
    )
    assert grid.voxel_grid_size == (1024, 1024, 40)
    assert grid.bev_shape == (128, 128)
    assert grid.cell_size_m == pytest.approx(1.6)
    assert grid.num_downsamplings == 3
    assert BevGrid.from_dict(grid.to_dict()) == grid


def test_non_square_grid_shape_is_rows_by_columns():
    grid = BevGrid(x_range_m=(-12.8, 12.8), y_range_m=(-6.4, 6.4), voxel_size_m=(0.4, 0.4, 1.0), bev_stride=2)
    assert grid.bev_shape == (16, 32)  # H along y, W along x


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"x_range_m": (-10.0, 12.0)}, "centred"),
        ({"voxel_size_m": (0.4, 0.2, 0.5)}, "square"),
        ({"bev_stride": 3}, "power of two"),
        ({"x_range_m": (-0.4, 0.4), "y_range_m": (-0.4, 0.4), "bev_stride": 4}, "divisible"),
    ],
)
def test_invalid_grids_are_rejected(kwargs, message):
    with pytest.raises(PerceptionError, match=message):
        BevGrid(**kwargs)


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(PerceptionError, match="unknown grid keys"):
        BevGrid.from_dict({"x_range": [-1, 1]})


def test_cell_centres_and_cell_of_agree():
    grid = BevGrid(x_range_m=(-3.2, 3.2), y_range_m=(-1.6, 1.6), voxel_size_m=(0.4, 0.4, 1.0), bev_stride=2)
    xs, ys = grid.cell_centres()
    assert xs.shape == (8,) and ys.shape == (4,)
    assert xs[0] == pytest.approx(-3.2 + 0.4) and ys[-1] == pytest.approx(1.6 - 0.4)
    rows, cols = grid.cell_of(xs[[2, 5]], ys[[3, 0]])
    np.testing.assert_array_equal(rows, [3, 0])
    np.testing.assert_array_equal(cols, [2, 5])
