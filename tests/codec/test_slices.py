"""Slices: every payload within budget, exact cover, independent decoding, reassembly with losses."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from revqom_nodes.codec.context import CellRun, measure_context_tables
from revqom_nodes.codec.errors import WireFormatError
from revqom_nodes.codec.slices import (
    MAX_SLICES,
    SliceAssembly,
    SliceError,
    cell_order,
    check_slice_fields,
    cut_slices,
    packed_cells_per_slice,
)
from revqom_nodes.codec.wire import Encoding, bits_per_index, decode_cells, encode_payload


def skewed_tables(Q: int, K: int) -> np.ndarray:
    """Index 0 very likely in every stage (an empty scene), the others rare."""
    tables = np.full((Q, K), 10, dtype=np.int64)
    tables[:, 0] = 100 * K
    return tables


def sample_map(rng: np.random.Generator, Q: int, K: int, H: int, W: int) -> np.ndarray:
    """Mostly index 0 (empty), a busy band of uniform indices in the lower half of the rows."""
    indices = np.where(rng.random((Q, H, W)) < 0.95, 0, rng.integers(0, K, (Q, H, W)))
    indices[:, H // 2 :, :] = rng.integers(0, K, (Q, H - H // 2, W))
    return indices


def context_tables(Q: int, K: int, H: int, W: int):
    """Context tables measured on maps like ``sample_map``'s."""
    rng = np.random.default_rng(100)
    return measure_context_tables([sample_map(rng, Q, K, H, W) for _ in range(3)], K, Q, max_symbols=64)


def decode(piece, Q, K, H, W, tables, context=None, interleave=1):
    return decode_cells(
        piece.payload,
        num_cells=piece.num_cells,
        num_quantizers=Q,
        codebook_size=K,
        encoding=piece.encoding,
        frequency_tables=tables,
        context_tables=context,
        run=CellRun(H, W, piece.first_cell, interleave),
    )


def assemble(pieces, Q, H, W, K, tables, keep=None, interleave=1, context=None) -> SliceAssembly:
    assembly = SliceAssembly(Q, H, W, len(pieces), interleave)
    for i, piece in enumerate(pieces):
        if keep is None or keep[i]:
            assembly.add(
                piece.first_cell,
                piece.num_cells,
                decode(piece, Q, K, H, W, tables, context, interleave),
                slice_index=i,
                num_slices=len(pieces),
                interleave=interleave,
            )
    return assembly


@pytest.mark.parametrize("encoding", list(Encoding))
@pytest.mark.parametrize(("K", "budget"), [(5, 7), (16, 40), (64, 100), (64, 1200), (1000, 64)])
def test_cut_fits_the_budget_covers_once_and_round_trips(encoding, K, budget):
    rng = np.random.default_rng(K + budget)
    Q, H, W = 3, 24, 20
    indices = sample_map(rng, Q, K, H, W)
    tables, context = skewed_tables(Q, K), context_tables(Q, K, H, W)
    pieces = cut_slices(indices, K, budget, encoding, tables, context_tables=context)
    assert all(len(p.payload) <= budget for p in pieces)
    starts = [p.first_cell for p in pieces]
    assert starts[0] == 0 and all(
        a.first_cell + a.num_cells == b.first_cell for a, b in itertools.pairwise(pieces)
    )
    assert pieces[-1].first_cell + pieces[-1].num_cells == H * W
    assembly = assemble(pieces, Q, H, W, K, tables, context=context)
    assert assembly.complete and assembly.fraction == 1.0 and assembly.valid.all()
    np.testing.assert_array_equal(assembly.indices, indices)
    if encoding is Encoding.PACKED:
        cells = packed_cells_per_slice(budget, Q, K)
        assert cells == budget * 8 // (Q * bits_per_index(K))
        assert [p.num_cells for p in pieces[:-1]] == [cells] * (len(pieces) - 1)
        assert all(p.encoding is Encoding.PACKED for p in pieces)


def test_budget_zero_is_the_whole_map_in_one_slice_byte_identical():
    rng = np.random.default_rng(1)
    indices = sample_map(rng, 2, 16, 8, 8)
    tables, context = skewed_tables(2, 16), context_tables(2, 16, 8, 8)
    for encoding in Encoding:
        (piece,) = cut_slices(indices, 16, 0, encoding, tables, context_tables=context)
        assert (piece.first_cell, piece.num_cells) == (0, 64)
        assert (piece.payload, piece.encoding) == encode_payload(indices, 16, encoding, tables, context)


def test_entropy_slices_hold_more_cells_where_the_map_is_empty():
    rng = np.random.default_rng(2)
    Q, K, H, W = 2, 64, 64, 32
    indices = sample_map(rng, Q, K, H, W)
    indices[:, : H // 2] = 0  # the upper half is empty
    pieces = cut_slices(indices, K, 24, Encoding.ENTROPY, skewed_tables(Q, K))
    half = H * W // 2
    empty = [p.num_cells for p in pieces if p.first_cell + p.num_cells <= half]
    busy = [p.num_cells for p in pieces if p.first_cell >= half]
    assert empty and busy and min(empty[:-1] or empty) > 3 * max(busy)
    assert min(busy) >= packed_cells_per_slice(24, Q, K) or busy[-1] == min(busy)  # PACKED's at least
    packed = cut_slices(indices, K, 24, Encoding.PACKED)
    assert len(pieces) < len(packed)


def test_cell_order_is_row_major_or_the_sub_grids_one_after_another():
    np.testing.assert_array_equal(cell_order(3, 4), np.arange(12))
    grid = np.arange(20).reshape(4, 5)
    expected = [grid[0::2, 0::2], grid[0::2, 1::2], grid[1::2, 0::2], grid[1::2, 1::2]]
    np.testing.assert_array_equal(cell_order(4, 5, 2), np.concatenate([g.reshape(-1) for g in expected]))
    assert sorted(cell_order(7, 9, 4).tolist()) == list(range(63))
    for bad in (0, 8, 256):
        with pytest.raises(SliceError, match="interleave"):
            cell_order(7, 9, bad)


@pytest.mark.parametrize("interleave", [1, 2, 3])
@pytest.mark.parametrize("encoding", list(Encoding))
def test_lost_slices_leave_the_rest_exact_and_marked(encoding, interleave):
    rng = np.random.default_rng(3)
    Q, K, H, W = 2, 16, 16, 12
    indices = sample_map(rng, Q, K, H, W)
    tables, context = skewed_tables(Q, K), context_tables(Q, K, H, W)
    pieces = cut_slices(indices, K, 30, encoding, tables, interleave, context)
    assert len(pieces) >= 4
    keep = rng.random(len(pieces)) < 0.6
    keep[0], keep[1] = True, False
    assembly = assemble(pieces, Q, H, W, K, tables, keep, interleave, context)
    order = cell_order(H, W, interleave)
    expected = np.zeros(H * W, dtype=bool)
    for piece, kept in zip(pieces, keep, strict=True):
        expected[order[piece.first_cell : piece.first_cell + piece.num_cells]] |= kept
    np.testing.assert_array_equal(assembly.valid, expected.reshape(H, W))
    valid = assembly.valid
    np.testing.assert_array_equal(assembly.indices[:, valid], indices[:, valid])
    assert (assembly.indices[:, ~valid] == 0).all()
    assert assembly.fraction == pytest.approx(expected.mean())
    assert not assembly.complete and assembly.slices_received == int(keep.sum())


def test_bad_slices_are_rejected_with_reasons_and_change_nothing():
    assembly = SliceAssembly(2, 4, 5, num_slices=3)
    good = np.ones((2, 6), dtype=np.int64)
    assembly.add(0, 6, good, slice_index=0, num_slices=3)
    cases = [
        (dict(first_cell=18, num_cells=6, slice_index=1, num_slices=3), "not a nonempty range"),
        (dict(first_cell=-1, num_cells=2, slice_index=1, num_slices=3), "not a nonempty range"),
        (dict(first_cell=6, num_cells=0, slice_index=1, num_slices=3), "not a nonempty range"),
        (dict(first_cell=4, num_cells=6, slice_index=1, num_slices=3), "overlap"),
        (dict(first_cell=6, num_cells=6, slice_index=0, num_slices=3), "already received"),
        (dict(first_cell=6, num_cells=6, slice_index=1, num_slices=4), "first slice said 3"),
        (dict(first_cell=6, num_cells=6, slice_index=3, num_slices=3), "slice_index"),
        (dict(first_cell=6, num_cells=6, slice_index=1, num_slices=0), "num_slices"),
        (dict(first_cell=6, num_cells=5, slice_index=1, num_slices=3), "indices must be"),
        (dict(first_cell=6, num_cells=6, slice_index=1, num_slices=3, interleave=2), "first slice said 1"),
        (dict(first_cell=6, num_cells=6, slice_index=1, num_slices=3, interleave=5), "interleave"),
    ]
    for fields, message in cases:
        with pytest.raises(SliceError, match=message):
            assembly.add(fields.pop("first_cell"), fields.pop("num_cells"), good, **fields)
    assert assembly.slices_received == 1 and assembly.fraction == pytest.approx(6 / 20)
    assert issubclass(SliceError, WireFormatError)
    with pytest.raises(SliceError, match="num_slices"):
        check_slice_fields(slice_index=0, num_slices=21, first_cell=0, num_cells=1, height=4, width=5)
    with pytest.raises(SliceError, match="num_slices"):
        SliceAssembly(2, 4, 5, num_slices=0)


def test_cut_errors():
    indices = np.zeros((3, 4, 4), dtype=np.int64)
    with pytest.raises(WireFormatError, match="holds no cell"):
        cut_slices(indices, 64, 2)  # 18 bits per cell
    with pytest.raises(WireFormatError, match="frequency tables"):
        cut_slices(indices, 64, 100, Encoding.ENTROPY)
    with pytest.raises(WireFormatError, match="Q, H, W"):
        cut_slices(indices[0], 64, 100)
    with pytest.raises(WireFormatError, match=">= 0"):
        cut_slices(indices, 64, -1)
    with pytest.raises(WireFormatError, match=str(MAX_SLICES)):
        cut_slices(np.zeros((1, 300, 300), dtype=np.int64), 64, 1)  # 90,000 one-cell slices
