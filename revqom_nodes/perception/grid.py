"""The voxel and BEV grid shared by the voxelizer, the backbone, the warp and the head.

Axes (the one home of this convention, see docs/design.md):
- The grid is centred on the LiDAR origin of the agent that owns the map.
- A BEV map is (B, C, H, W): the row index i runs along +y, the column index j
  along +x. Cell (i, j) has its centre at
  ``(x_min + (j + 0.5) * cell_size_m, y_min + (i + 0.5) * cell_size_m)``.
- Voxel indices are ``(z, y, x)`` (spconv order); voxel (k, i, j) covers
  ``[z_min + k * vz, z_min + (k + 1) * vz)`` and likewise in y and x.

The z range must cover every agent kind in its own frame: a vehicle LiDAR sees
the ground near z = -2 m, an infrastructure "virtual LiDAR" mounted 5-7 m high
sees it near z = -6 m. The default z range [-8, 2] m covers both. The defaults are
the CPU training grid: +-51.2 m, 0.4 x 0.4 x 1.0 m voxels, stride 2 -> 128 x 128
cells of 0.8 m. The paper's grid (+-102.4 m, z -10..6 m, 0.2 x 0.2 x 0.4 m, stride 8
-> 128 x 128 cells of 1.6 m) is expressible too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from revqom_nodes.perception.errors import PerceptionError

_TOLERANCE = 1e-6


def cell_count(extent_m: tuple[float, float], size_m: float) -> int:
    """Number of cells of size ``size_m`` in ``[min, max)``; the extent must be a whole multiple."""
    low, high = extent_m
    if not high > low:
        raise PerceptionError(f"range {extent_m} must have max > min")
    if not size_m > 0:
        raise PerceptionError(f"cell size {size_m} must be positive")
    count = (high - low) / size_m
    if abs(count - round(count)) > _TOLERANCE * max(1.0, count):
        raise PerceptionError(f"range {extent_m} is not a whole multiple of the cell size {size_m} m")
    return round(count)


@dataclass(frozen=True)
class BevGrid:
    """Voxel grid of one agent's LiDAR frame and the BEV map derived from it (metres)."""

    x_range_m: tuple[float, float] = (-51.2, 51.2)
    y_range_m: tuple[float, float] = (-51.2, 51.2)
    z_range_m: tuple[float, float] = (-8.0, 2.0)
    voxel_size_m: tuple[float, float, float] = (0.4, 0.4, 1.0)
    bev_stride: int = 2

    def __post_init__(self) -> None:
        for name in ("x_range_m", "y_range_m", "z_range_m", "voxel_size_m"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        if len(self.voxel_size_m) != 3:
            raise PerceptionError(f"voxel_size_m needs 3 values (x, y, z), got {self.voxel_size_m}")
        for name in ("x_range_m", "y_range_m", "z_range_m"):
            if len(getattr(self, name)) != 2:
                raise PerceptionError(f"{name} needs (min, max), got {getattr(self, name)}")
        for name in ("x_range_m", "y_range_m"):
            low, high = getattr(self, name)
            if abs(low + high) > _TOLERANCE:
                raise PerceptionError(f"{name} {(low, high)} must be centred on the LiDAR origin")
        if self.voxel_size_m[0] != self.voxel_size_m[1]:
            raise PerceptionError(f"BEV cells must be square, got voxel_size_m {self.voxel_size_m}")
        stride = self.bev_stride
        if not isinstance(stride, int) or stride < 1 or stride & (stride - 1):
            raise PerceptionError(f"bev_stride must be a power of two >= 1, got {self.bev_stride}")
        nx, ny, _ = self.voxel_grid_size
        if nx % stride or ny % stride:
            raise PerceptionError(f"voxel grid {nx} x {ny} is not divisible by bev_stride {stride}")

    @property
    def voxel_grid_size(self) -> tuple[int, int, int]:
        """Voxel counts (nx, ny, nz)."""
        vx, vy, vz = self.voxel_size_m
        return (
            cell_count(self.x_range_m, vx),
            cell_count(self.y_range_m, vy),
            cell_count(self.z_range_m, vz),
        )

    @property
    def num_downsamplings(self) -> int:
        """Stride-2 stages from the voxel grid to the BEV grid: log2(bev_stride)."""
        return int(math.log2(self.bev_stride))

    @property
    def bev_shape(self) -> tuple[int, int]:
        """BEV map size (H, W): H cells along y, W cells along x."""
        nx, ny, _ = self.voxel_grid_size
        return ny // self.bev_stride, nx // self.bev_stride

    @property
    def cell_size_m(self) -> float:
        """Edge of one (square) BEV cell in metres."""
        return self.voxel_size_m[0] * self.bev_stride

    @property
    def half_extent_m(self) -> tuple[float, float]:
        """Half the map size (x, y) in metres: the normaliser of the warp."""
        return self.x_range_m[1], self.y_range_m[1]

    def cell_centres(self) -> tuple[np.ndarray, np.ndarray]:
        """Cell centre coordinates: xs (W,) along the columns, ys (H,) along the rows, metres."""
        height, width = self.bev_shape
        s = self.cell_size_m
        xs = self.x_range_m[0] + (np.arange(width) + 0.5) * s
        ys = self.y_range_m[0] + (np.arange(height) + 0.5) * s
        return xs, ys

    def cell_of(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Metric (x, y) -> integer (row, col) of the containing cell; may fall outside the map."""
        s = self.cell_size_m
        col = np.floor((np.asarray(x) - self.x_range_m[0]) / s).astype(np.int64)
        row = np.floor((np.asarray(y) - self.y_range_m[0]) / s).astype(np.int64)
        return row, col

    def to_dict(self) -> dict[str, Any]:
        """Plain-YAML form (lists instead of tuples)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> BevGrid:
        """Build from a YAML mapping; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise PerceptionError(f"unknown grid keys {unknown}; valid keys: {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
