"""PointCloud2 field layout <-> numpy without ROS."""

from __future__ import annotations

import numpy as np
import pytest

from revqom_nodes.data.errors import DatasetError
from revqom_nodes.data.pointcloud import (
    FLOAT32,
    XYZI_FIELDS,
    FieldSpec,
    cloud_data_to_xyzi,
    cloud_dtype,
    xyzi_to_cloud_data,
)


def _points(n: int = 30) -> np.ndarray:
    return np.random.default_rng(1).normal(0, 10, (n, 4)).astype(np.float32)


def test_round_trip() -> None:
    points = _points()
    fields, point_step, data = xyzi_to_cloud_data(points)
    assert fields == XYZI_FIELDS and point_step == 16 and len(data) == 16 * len(points)
    assert [(f.name, f.offset, f.datatype, f.count) for f in fields] == [
        ("x", 0, 7, 1),
        ("y", 4, 7, 1),
        ("z", 8, 7, 1),
        ("intensity", 12, 7, 1),
    ]
    np.testing.assert_array_equal(cloud_data_to_xyzi(fields, point_step, data, width=len(points)), points)


def test_padded_organised_cloud_with_other_types() -> None:
    """height 2 x width 3, 32-byte records (x y z float32, ring uint16, intensity uint8,
    t float64), 8 bytes of padding after each row."""
    fields = [
        FieldSpec("x", 0, FLOAT32),
        FieldSpec("y", 4, FLOAT32),
        FieldSpec("z", 8, FLOAT32),
        FieldSpec("ring", 12, 4),
        FieldSpec("intensity", 14, 2),
        FieldSpec("t", 16, 8),
    ]
    dtype = cloud_dtype(fields, 32)
    records = np.zeros((2, 3), dtype)
    points = _points(6)
    points[:, 3] = np.arange(6) * 40
    for i, name in enumerate("xyz"):
        records[name] = points[:, i].reshape(2, 3)
    records["intensity"] = points[:, 3].reshape(2, 3).astype(np.uint8)
    rows = np.zeros((2, 3 * 32 + 8), np.uint8)
    rows[:, : 3 * 32] = records.view(np.uint8).reshape(2, -1)
    back = cloud_data_to_xyzi(fields, 32, rows.tobytes(), width=3, height=2, row_step=104)
    np.testing.assert_array_equal(back, points)


def test_big_endian_nan_and_missing_intensity() -> None:
    points = _points(4)
    points[2, 0] = np.nan
    data = points[:, :3].astype(">f4").tobytes()
    fields = [FieldSpec("x", 0, FLOAT32), FieldSpec("y", 4, FLOAT32), FieldSpec("z", 8, FLOAT32)]
    back = cloud_data_to_xyzi(fields, 12, data, width=4, is_bigendian=True)
    expected = np.delete(points, 2, axis=0)
    expected[:, 3] = 0.0
    np.testing.assert_array_equal(back, expected)
    assert len(cloud_data_to_xyzi(fields, 12, data, width=4, is_bigendian=True, drop_nan=False)) == 4


def test_bad_clouds() -> None:
    _, point_step, data = xyzi_to_cloud_data(_points(5))
    with pytest.raises(DatasetError, match="need"):
        cloud_data_to_xyzi(XYZI_FIELDS, point_step, data[:-1], width=5)
    with pytest.raises(DatasetError, match=r"no field\(s\) \['z'\]"):
        cloud_data_to_xyzi(XYZI_FIELDS[:2], point_step, data, width=5)
    with pytest.raises(DatasetError, match="datatype"):
        cloud_data_to_xyzi([*XYZI_FIELDS[:3], FieldSpec("intensity", 12, 42)], point_step, data, width=5)
    with pytest.raises(DatasetError, match=r"\(N, 4\)"):
        xyzi_to_cloud_data(np.zeros((3, 3)))
