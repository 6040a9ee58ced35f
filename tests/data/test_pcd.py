"""PCD I/O: the three DATA modes, integer intensity, NaN rows, bad files."""

from __future__ import annotations

import struct
from pathlib import Path

import lzf
import numpy as np
import pytest

from revqom_nodes.data.errors import DatasetError
from revqom_nodes.data.pcd import read_pcd, write_pcd


def _header(fields: str, size: str, type_: str, n: int, data: str, count: str | None = None) -> bytes:
    count = count or " ".join("1" for _ in fields.split())
    return (
        f"# .PCD v0.7 - Point Cloud Data file format\nVERSION 0.7\nFIELDS {fields}\n"
        f"SIZE {size}\nTYPE {type_}\n"
        f"COUNT {count}\nWIDTH {n}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {n}\nDATA {data}\n"
    ).encode("ascii")


def _points(n: int = 50, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    points = rng.normal(0.0, 30.0, (n, 4)).astype(np.float32)
    points[:, 3] = rng.integers(0, 256, n)
    return points


def test_binary_round_trip_drops_nan_rows(tmp_path: Path) -> None:
    points = _points()
    points[3, 1] = np.nan
    points[7, 3] = np.nan
    path = tmp_path / "a.pcd"
    write_pcd(path, points)
    back = read_pcd(path)
    assert back.dtype == np.float32 and back.shape == (48, 4)
    np.testing.assert_array_equal(back, np.delete(points, [3, 7], axis=0))
    assert b"DATA binary\n" in path.read_bytes()[:400]
    assert list(tmp_path.iterdir()) == [path]  # no partial file left behind


def test_ascii_with_integer_intensity_and_nan(tmp_path: Path) -> None:
    path = tmp_path / "a.pcd"
    path.write_bytes(
        _header("x y z intensity", "4 4 4 1", "F F F U", 3, "ascii")
        + b"1.5 -2 3 7\nnan 0 0 1\n4 5 6.25 255\n"
    )
    np.testing.assert_array_equal(read_pcd(path), [[1.5, -2, 3, 7], [4, 5, 6.25, 255]])


def test_binary_with_extra_fields_and_uint8_intensity(tmp_path: Path) -> None:
    points = _points(20)
    record = np.dtype(
        [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("intensity", "u1"), ("ring", "<u2"), ("t", "<f8", (2,))]
    )
    data = np.zeros(20, record)
    for i, name in enumerate("xyz"):
        data[name] = points[:, i]
    data["intensity"] = points[:, 3].astype(np.uint8)
    data["ring"] = 3
    path = tmp_path / "a.pcd"
    path.write_bytes(
        _header("x y z intensity ring t", "4 4 4 1 2 8", "F F F U U F", 20, "binary", "1 1 1 1 1 2")
        + data.tobytes()
    )
    np.testing.assert_array_equal(read_pcd(path), points)


def _compressed(columns: bytes, n: int, fields: str = "x y z intensity") -> bytes:
    packed = lzf.compress(columns, 2 * len(columns) + 16)
    return (
        _header(fields, "4 4 4 4", "F F F F", n, "binary_compressed")
        + struct.pack("<II", len(packed), len(columns))
        + packed
    )


def test_binary_compressed_is_column_major(tmp_path: Path) -> None:
    points = _points(64)
    path = tmp_path / "a.pcd"
    path.write_bytes(_compressed(points.T.astype("<f4").tobytes(), 64))
    np.testing.assert_array_equal(read_pcd(path), points)


def test_binary_compressed_decodes_a_hand_made_lzf_block(tmp_path: Path) -> None:
    """A raw liblzf stream written by hand from the format: a 4-byte literal run, then a
    28-byte back-reference at distance 4 -> eight float32 1.0 (two points, four fields)."""
    one = struct.pack("<f", 1.0)
    block = bytes([0x03]) + one + bytes([0xE0, 19, 0x03])
    path = tmp_path / "a.pcd"
    path.write_bytes(
        _header("x y z intensity", "4 4 4 4", "F F F F", 2, "binary_compressed")
        + struct.pack("<II", len(block), 32)
        + block
    )
    np.testing.assert_array_equal(read_pcd(path), np.ones((2, 4), np.float32))


@pytest.mark.parametrize(
    "mode, cut",
    [("binary", 40), ("binary_compressed", 30), ("binary_compressed", 4), ("ascii", 25)],
)
def test_truncated_file_names_the_file(tmp_path: Path, mode: str, cut: int) -> None:
    points = _points(10)
    path = tmp_path / f"{mode}.pcd"
    if mode == "binary":
        write_pcd(path, points)
        raw = path.read_bytes()
    elif mode == "binary_compressed":
        raw = _compressed(points.T.astype("<f4").tobytes(), 10)
    else:
        raw = _header("x y z intensity", "4 4 4 4", "F F F F", 10, "ascii") + b"1 2 3 4\n" * 10
    path.write_bytes(raw[:-cut])
    with pytest.raises(DatasetError, match=str(path)):
        read_pcd(path)


CORRUPT_LZF_BLOCKS = {  # python-lzf returns None for the first, raises ValueError for the second
    "overflowing": bytes([0xFF, 0xFF, 0xFF, 0x00]) * 4,
    "malformed": b"\x01abc",
}


@pytest.mark.parametrize("garbage", CORRUPT_LZF_BLOCKS.values(), ids=CORRUPT_LZF_BLOCKS.keys())
def test_corrupt_lzf_block_names_the_file(tmp_path: Path, garbage: bytes) -> None:
    path = tmp_path / "a.pcd"
    path.write_bytes(
        _header("x y z intensity", "4 4 4 4", "F F F F", 2, "binary_compressed")
        + struct.pack("<II", len(garbage), 32)
        + garbage
    )
    with pytest.raises(DatasetError, match=r"a\.pcd: corrupt LZF block"):
        read_pcd(path)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"VERSION 0.7\nFIELDS x y z\n", "no DATA line"),
        (_header("x y intensity", "4 4 4", "F F F", 1, "binary") + bytes(12), "no field"),
        (_header("x y z intensity", "4 4 4 4", "F F F F", 1, "zip") + bytes(16), "unknown PCD DATA mode"),
        (_header("x y z intensity", "4 4 4 4", "F F F Q", 1, "binary") + bytes(16), "unsupported"),
    ],
)
def test_malformed_header(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.pcd"
    path.write_bytes(content)
    with pytest.raises(DatasetError, match=message):
        read_pcd(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"nothere\.pcd"):
        read_pcd(tmp_path / "nothere.pcd")


def test_empty_cloud(tmp_path: Path) -> None:
    path = tmp_path / "empty.pcd"
    write_pcd(path, np.zeros((0, 4), np.float32))
    assert read_pcd(path).shape == (0, 4)


def test_write_rejects_wrong_shape(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"\(N, 4\)"):
        write_pcd(tmp_path / "a.pcd", np.zeros((5, 3)))
    assert not list(tmp_path.iterdir())
