"""PCD v0.7 point clouds: read ``ascii``, ``binary`` and ``binary_compressed``; write ``binary``.

Points are (N, 4) float32 ``x, y, z, intensity`` in the sensor's frame. Rows with a
NaN or infinite value are dropped. ``binary_compressed`` stores each field's column
contiguously after one LZF block (liblzf's raw format, decoded with ``python-lzf``).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from revqom_nodes.data.errors import DatasetError

_TYPES = {
    ("F", 4): "<f4",
    ("F", 8): "<f8",
    ("U", 1): "u1",
    ("U", 2): "<u2",
    ("U", 4): "<u4",
    ("U", 8): "<u8",
    ("I", 1): "i1",
    ("I", 2): "<i2",
    ("I", 4): "<i4",
    ("I", 8): "<i8",
}
_REQUIRED = ("x", "y", "z")
_MAX_HEADER_LINES = 64


def _parse_header(raw: bytes, path: Path) -> tuple[dict[str, list[str]], int]:
    """Header keyword -> values, and the byte offset where the data starts."""
    header: dict[str, list[str]] = {}
    pos = 0
    for _ in range(_MAX_HEADER_LINES):
        end = raw.find(b"\n", pos)
        if end < 0:
            raise DatasetError(f"{path}: PCD header has no DATA line (truncated file?)")
        line = raw[pos:end].decode("ascii", errors="replace").strip()
        pos = end + 1
        if not line or line.startswith("#"):
            continue
        key, *values = line.split()
        header[key.upper()] = values
        if key.upper() == "DATA":
            return header, pos
    raise DatasetError(f"{path}: not a PCD file (no DATA line in the first {_MAX_HEADER_LINES} lines)")


def _field_dtype(header: dict[str, list[str]], path: Path) -> np.dtype:
    """Packed structured dtype of one point record, from FIELDS / SIZE / TYPE / COUNT."""
    try:
        names = header["FIELDS"]
        sizes = [int(s) for s in header["SIZE"]]
        types = [t.upper() for t in header["TYPE"]]
        counts = [int(c) for c in header.get("COUNT", ["1"] * len(names))]
    except (KeyError, ValueError) as exc:
        raise DatasetError(f"{path}: bad PCD header ({exc})") from exc
    if not len(names) == len(sizes) == len(types) == len(counts):
        raise DatasetError(f"{path}: PCD header FIELDS, SIZE, TYPE and COUNT differ in length")
    unique, formats = [], []
    for i, (name, size, kind, count) in enumerate(zip(names, sizes, types, counts, strict=True)):
        if (kind, size) not in _TYPES:
            raise DatasetError(f"{path}: unsupported PCD field type {kind}{size} for {name!r}")
        unique.append(name if name not in unique and name != "_" else f"_pad{i}")
        formats.append((_TYPES[(kind, size)], (count,)) if count > 1 else _TYPES[(kind, size)])
    missing = [name for name in _REQUIRED if name not in unique]
    if missing:
        raise DatasetError(f"{path}: PCD has no field(s) {missing} (fields: {names})")
    return np.dtype({"names": unique, "formats": formats})


def _num_points(header: dict[str, list[str]], path: Path) -> int:
    try:
        if "POINTS" in header:
            return int(header["POINTS"][0])
        return int(header["WIDTH"][0]) * int(header.get("HEIGHT", ["1"])[0])
    except (KeyError, ValueError, IndexError) as exc:
        raise DatasetError(f"{path}: bad PCD header (POINTS / WIDTH / HEIGHT)") from exc


def _read_ascii(body: bytes, dtype: np.dtype, n: int, path: Path) -> dict[str, np.ndarray]:
    widths = [int(np.prod(dtype[name].shape or (1,))) for name in dtype.names]
    try:
        table = np.loadtxt(io.StringIO(body.decode("ascii")), dtype=np.float64, ndmin=2)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: corrupt ascii PCD data ({exc})") from exc
    if n and (table.shape[0] < n or table.shape[1] != sum(widths)):
        raise DatasetError(
            f"{path}: ascii PCD has {table.shape[0]} x {table.shape[1]} values, "
            f"header says {n} x {sum(widths)} (truncated file?)"
        )
    starts = np.cumsum([0, *widths])
    return {name: table[:n, starts[i]] for i, name in enumerate(dtype.names)}


def _read_binary(body: bytes, dtype: np.dtype, n: int, path: Path) -> dict[str, np.ndarray]:
    if len(body) < n * dtype.itemsize:
        raise DatasetError(
            f"{path}: binary PCD holds {len(body)} bytes, {n} points need {n * dtype.itemsize} "
            "(truncated file?)"
        )
    records = np.frombuffer(body, dtype=dtype, count=n)
    return {name: records[name] for name in dtype.names}


def _read_compressed(body: bytes, dtype: np.dtype, n: int, path: Path) -> dict[str, np.ndarray]:
    import lzf

    if len(body) < 8:
        raise DatasetError(f"{path}: binary_compressed PCD is missing its size words (truncated file?)")
    compressed, uncompressed = np.frombuffer(body[:8], dtype="<u4")
    if len(body) - 8 < compressed:
        raise DatasetError(
            f"{path}: binary_compressed PCD holds {len(body) - 8} of {compressed} compressed bytes "
            "(truncated file?)"
        )
    if uncompressed != n * dtype.itemsize:
        raise DatasetError(f"{path}: binary_compressed PCD size {uncompressed} does not match {n} points")
    try:  # python-lzf: None when the output would not fit, ValueError for a malformed block
        data = lzf.decompress(body[8 : 8 + compressed], int(uncompressed)) if uncompressed else b""
    except ValueError as exc:
        raise DatasetError(f"{path}: corrupt LZF block in binary_compressed PCD ({exc})") from exc
    if data is None or len(data) != uncompressed:
        raise DatasetError(f"{path}: corrupt LZF block in binary_compressed PCD")
    fields, offset = {}, 0
    for name in dtype.names:
        sub = dtype[name]
        column = np.frombuffer(data, dtype=sub.base, count=n * max(1, int(np.prod(sub.shape))), offset=offset)
        fields[name] = column.reshape(n, -1)[:, 0]
        offset += n * sub.itemsize
    return fields


def read_pcd(path: str | os.PathLike) -> np.ndarray:
    """Read a PCD v0.7 file -> (N, 4) float32 ``x, y, z, intensity`` (intensity 0 if absent)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read point cloud ({exc.strerror})") from exc
    header, start = _parse_header(raw, path)
    dtype = _field_dtype(header, path)
    n = _num_points(header, path)
    mode = header["DATA"][0].lower() if header["DATA"] else ""
    readers = {"ascii": _read_ascii, "binary": _read_binary, "binary_compressed": _read_compressed}
    if mode not in readers:
        raise DatasetError(f"{path}: unknown PCD DATA mode {mode!r}")
    if n == 0:
        return np.zeros((0, 4), dtype=np.float32)
    fields = readers[mode](raw[start:], dtype, n, path)
    points = np.zeros((n, 4), dtype=np.float32)
    for column, name in enumerate(("x", "y", "z", "intensity")):
        if name in fields:
            values = fields[name]
            points[:, column] = values if values.ndim == 1 else values[:, 0]
    return points[np.isfinite(points).all(axis=1)]


def write_pcd(path: str | os.PathLike, points: np.ndarray) -> None:
    """Write (N, 4) ``x, y, z, intensity`` points as a ``binary`` PCD (float32 fields).

    The file appears under its name only once complete (written next to it, then renamed).
    """
    path = Path(path)
    points = np.ascontiguousarray(np.asarray(points, dtype="<f4"))
    if points.ndim != 2 or points.shape[1] != 4:
        raise DatasetError(f"{path}: points must be (N, 4), got {points.shape}")
    n = points.shape[0]
    header = (
        "# .PCD v0.7 - Point Cloud Data file format\nVERSION 0.7\nFIELDS x y z intensity\n"
        f"SIZE 4 4 4 4\nTYPE F F F F\nCOUNT 1 1 1 1\nWIDTH {n}\nHEIGHT 1\n"
        f"VIEWPOINT 0 0 0 1 0 0 0\nPOINTS {n}\nDATA binary\n"
    )
    partial = path.with_name(f".{path.name}.partial")
    with open(partial, "wb") as stream:
        stream.write(header.encode("ascii"))
        stream.write(points.tobytes())
    os.replace(partial, path)
