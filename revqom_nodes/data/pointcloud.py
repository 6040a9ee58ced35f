"""sensor_msgs/PointCloud2 field layout <-> numpy, with no ROS import.

Both the bag converter (rosbags message objects) and the ROS nodes (rclpy messages)
go through these functions: they take and return the plain parts of a cloud (its
field list, ``point_step``, ``row_step``, size and data bytes). Any object with
``name``, ``offset``, ``datatype`` and ``count`` attributes (rclpy's or rosbags'
``PointField``, or :class:`FieldSpec`) describes a field.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from revqom_nodes.data.errors import DatasetError

# sensor_msgs/PointField datatype constants -> numpy scalar type (little endian).
POINT_FIELD_DTYPES: dict[int, str] = {
    1: "i1",
    2: "u1",
    3: "<i2",
    4: "<u2",
    5: "<i4",
    6: "<u4",
    7: "<f4",
    8: "<f8",
}
FLOAT32 = 7
XYZI_NAMES: tuple[str, str, str, str] = ("x", "y", "z", "intensity")


class PointFieldLike(Protocol):
    """What is read from a field description (rclpy, rosbags or :class:`FieldSpec`)."""

    name: str
    offset: int
    datatype: int
    count: int


@dataclass(frozen=True)
class FieldSpec:
    """One PointCloud2 field: byte offset in the point record, datatype code, count."""

    name: str
    offset: int
    datatype: int
    count: int = 1


XYZI_FIELDS: tuple[FieldSpec, ...] = tuple(
    FieldSpec(name, 4 * i, FLOAT32) for i, name in enumerate(XYZI_NAMES)
)
XYZI_POINT_STEP = 16


def xyzi_to_cloud_data(points: np.ndarray) -> tuple[tuple[FieldSpec, ...], int, bytes]:
    """(N, 4) ``x, y, z, intensity`` -> (fields, point_step, data) of an unorganised cloud.

    The message then has ``height = 1``, ``width = N``, ``row_step = N * point_step``,
    ``is_bigendian = False``; data is N records of four little-endian float32.
    """
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 4:
        raise DatasetError(f"points must be (N, 4) x, y, z, intensity, got {points.shape}")
    return XYZI_FIELDS, XYZI_POINT_STEP, np.ascontiguousarray(points, dtype="<f4").tobytes()


def cloud_dtype(fields: Sequence[PointFieldLike], point_step: int, *, big_endian: bool = False) -> np.dtype:
    """Structured numpy dtype of one point record (padding between fields kept by offsets)."""
    names, formats, offsets = [], [], []
    for field in fields:
        if field.datatype not in POINT_FIELD_DTYPES:
            raise DatasetError(f"PointCloud2 field {field.name!r} has unknown datatype {field.datatype}")
        scalar = np.dtype(POINT_FIELD_DTYPES[field.datatype])
        if big_endian:
            scalar = scalar.newbyteorder(">")
        names.append(field.name)
        formats.append((scalar, (field.count,)) if field.count > 1 else scalar)
        offsets.append(field.offset)
    try:
        return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": point_step})
    except ValueError as exc:
        raise DatasetError(f"PointCloud2 fields do not fit point_step {point_step}: {exc}") from exc


def cloud_data_to_xyzi(
    fields: Sequence[PointFieldLike],
    point_step: int,
    data: bytes | bytearray | memoryview | np.ndarray,
    *,
    width: int,
    height: int = 1,
    row_step: int | None = None,
    is_bigendian: bool = False,
    drop_nan: bool = True,
) -> np.ndarray:
    """Parse a cloud's data -> (N, 4) float32 ``x, y, z, intensity``, N = width * height.

    ``x``, ``y`` and ``z`` are required; a missing ``intensity`` field reads as 0.
    Rows with a NaN or infinite value are dropped when ``drop_nan``.
    """
    names = {field.name for field in fields}
    missing = [name for name in XYZI_NAMES[:3] if name not in names]
    if missing:
        raise DatasetError(f"PointCloud2 has no field(s) {missing} (fields: {sorted(names)})")
    dtype = cloud_dtype(fields, point_step, big_endian=is_bigendian)
    row_step = width * point_step if row_step is None else row_step
    raw = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.view(np.uint8)
    if row_step < width * point_step or raw.size < height * row_step:
        raise DatasetError(
            f"PointCloud2 data holds {raw.size} bytes, {height} x {width} points of {point_step} bytes "
            f"(row_step {row_step}) need {height * row_step}"
        )
    rows = raw[: height * row_step].reshape(height, row_step)[:, : width * point_step]
    records = np.ascontiguousarray(rows).view(dtype).reshape(-1)
    points = np.zeros((records.shape[0], 4), dtype=np.float32)
    for column, name in enumerate(XYZI_NAMES):
        if name in names:
            values = records[name]
            points[:, column] = values if values.ndim == 1 else values[:, 0]
    if drop_nan:
        points = points[np.isfinite(points).all(axis=1)]
    return points
