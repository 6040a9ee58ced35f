"""Slices: an index map cut into runs of cells whose payloads fit a byte budget, and reassembly.

A slice carries the cells ``[first_cell, first_cell + num_cells)`` of the (H, W) grid in the
frame's cell order (``cell_order``), all Q stages of each. Interleave 1 is row-major (cell
``i`` is row ``i // W``, column ``i % W``); interleave s sends the s * s sub-grids
``(a::s, b::s)`` one after another (a, then b, in row-major order each), so that a lost slice
takes every s-th cell of a band instead of the band, and the receiver can conceal each lost
cell from received neighbours (``codec/conceal.py``). Its payload is the wire format of its
(Q, num_cells) indices (``wire.encode_cells``: PACKED, or ENTROPY or CONTEXT with their
per-slice fallback to PACKED; CONTEXT codes a slice's cells with contexts from inside the slice
only), so every slice decodes on its own; a whole map in one message is the one-slice case.
Specified in docs/wire-format.md, "Slices".

Cutting: PACKED slices hold a fixed ``floor(budget * 8 / (Q * b))`` cells (the last one fewer);
ENTROPY and CONTEXT slices grow while the size estimated from the tables fits the budget, are
then encoded and shrunk until the payload fits, and never hold fewer cells than a PACKED slice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from revqom_nodes.codec.context import (
    CellRun,
    CellSymbols,
    ContextTables,
    cell_bits,
    cell_symbols,
    checked_tables,
)
from revqom_nodes.codec.entropy import validate_frequency_tables
from revqom_nodes.codec.errors import WireFormatError
from revqom_nodes.codec.wire import STAGE_LENGTH_BYTES, Encoding, bits_per_index, encode_cells

MAX_SLICES = 65535  # EncodedBEV.num_slices is a uint16
MAX_INTERLEAVE = 255  # EncodedBEV.interleave is a uint8
ENTROPY_SLACK_BITS = 40  # range coder flush per stream, in the size estimate (measured <= 34)
GROW_TOLERANCE = 64  # growing a fitting ENTROPY/CONTEXT slice stops within 1/64 of its best cell count
WORD_BITS = 32  # a range-coded stream is a whole number of 32-bit words


class SliceError(WireFormatError):
    """A slice's cell range or slice fields do not fit its frame (docs/wire-format.md, "Slices")."""


class Slice(NamedTuple):
    """One message's share of a map: cells ``[first_cell, first_cell + num_cells)``."""

    first_cell: int
    num_cells: int
    payload: bytes
    encoding: Encoding  # the one used: ENTROPY and CONTEXT fall back to PACKED per slice when not smaller


def packed_cells_per_slice(budget_bytes: int, num_quantizers: int, codebook_size: int) -> int:
    """Cells of one PACKED slice: floor(budget * 8 / (Q * b)). Raises WireFormatError when 0."""
    cells = int(budget_bytes) * 8 // (num_quantizers * bits_per_index(codebook_size))
    if cells < 1:
        raise WireFormatError(
            f"a budget of {budget_bytes} bytes holds no cell of {num_quantizers} x "
            f"{bits_per_index(codebook_size)} bits"
        )
    return cells


def check_interleave(interleave: int, height: int, width: int) -> None:
    """Raises SliceError unless 1 <= interleave <= min(H, W, MAX_INTERLEAVE)."""
    if not 1 <= interleave <= min(int(height), int(width), MAX_INTERLEAVE):
        raise SliceError(
            f"interleave = {interleave} is outside 1..{min(int(height), int(width), MAX_INTERLEAVE)} "
            f"for a {height} x {width} map"
        )


def cell_order(height: int, width: int, interleave: int = 1) -> np.ndarray:
    """(H * W,) int64: the row-major cell index of each position in the frame's cell order
    (the sub-grids ``(a::s, b::s)`` of interleave s one after another). Raises SliceError."""
    check_interleave(interleave, height, width)
    grid = np.arange(int(height) * int(width), dtype=np.int64).reshape(int(height), int(width))
    s = int(interleave)
    return np.concatenate([grid[a::s, b::s].reshape(-1) for a in range(s) for b in range(s)])


def cut_slices(
    indices: np.ndarray,
    codebook_size: int,
    budget_bytes: int,
    encoding: Encoding = Encoding.PACKED,
    frequency_tables: np.ndarray | None = None,
    interleave: int = 1,
    context_tables: ContextTables | None = None,
) -> list[Slice]:
    """(Q, H, W) indices in [0, K) -> slices covering the map once, in the cell order of
    ``interleave`` (``cell_order``).

    budget_bytes: the largest payload of one slice; 0 puts the whole map in one slice.
    ENTROPY needs ``frequency_tables``, CONTEXT ``context_tables``.
    Raises WireFormatError for bad indices or tables, a budget below one cell, a bad
    interleave, or more than MAX_SLICES slices.
    """
    indices = np.asarray(indices)
    if indices.ndim != 3 or indices.dtype.kind not in "iu":
        raise WireFormatError(
            f"indices must be a (Q, H, W) integer array, got {indices.shape} {indices.dtype}"
        )
    Q, H, W = indices.shape
    flat = indices.reshape(Q, H * W)[:, cell_order(H, W, interleave)]
    encoding = Encoding(encoding)
    if budget_bytes < 0:
        raise WireFormatError(f"budget_bytes must be >= 0, got {budget_bytes}")
    coder = _Coder(flat, codebook_size, encoding, frequency_tables, context_tables, H, W, interleave)
    if budget_bytes == 0:
        return [coder.encode(0, H * W)]
    packed_cells = packed_cells_per_slice(budget_bytes, Q, codebook_size)
    total = H * W
    if encoding is Encoding.PACKED:
        runs = [(start, min(packed_cells, total - start)) for start in range(0, total, packed_cells)]
        _check_count(len(runs))
        return [coder.encode(start, n) for start, n in runs]
    estimate = _size_estimate(flat, encoding, coder)
    slices: list[Slice] = []
    start = 0
    while start < total:
        floor = min(packed_cells, total - start)
        fitting, upper = _estimated_run(estimate, start, budget_bytes, floor)
        n = max(floor, fitting)
        piece = coder.encode(start, n)
        while len(piece.payload) > budget_bytes:  # the estimate was short: shrink, never below a PACKED slice
            excess = len(piece.payload) - budget_bytes
            n = max(floor, n - max(1, -(-n * excess // len(piece.payload))))
            piece = coder.encode(start, n)
        piece = _grow(coder, piece, upper, budget_bytes)
        slices.append(piece)
        _check_count(len(slices))
        start += piece.num_cells
    return slices


def _check_count(count: int) -> None:
    if count > MAX_SLICES:
        raise WireFormatError(f"the map needs more than {MAX_SLICES} slices at this budget")


class _Coder:
    """Encodes runs ``[start, start + n)`` of a map's (Q, H * W) cells, in cell order, with
    validated tables."""

    def __init__(
        self,
        flat: np.ndarray,
        codebook_size: int,
        encoding: Encoding,
        frequency_tables: np.ndarray | None,
        context_tables: ContextTables | None,
        height: int,
        width: int,
        interleave: int,
    ) -> None:
        Q = flat.shape[0]
        self.flat, self.codebook_size, self.encoding = flat, codebook_size, encoding
        self.height, self.width, self.interleave = height, width, interleave
        self.frequency_tables = self.context_tables = None
        if encoding is Encoding.ENTROPY:
            if frequency_tables is None:
                raise WireFormatError("ENTROPY encoding needs frequency tables; this codec state has none")
            self.frequency_tables = validate_frequency_tables(frequency_tables, Q, codebook_size)
        if encoding is Encoding.CONTEXT:
            if context_tables is None:
                raise WireFormatError("CONTEXT encoding needs context tables; this codec state has none")
            self.context_tables = checked_tables(context_tables, Q, codebook_size)

    def run(self, start: int) -> CellRun:
        return CellRun(self.height, self.width, start, self.interleave)

    def encode(self, start: int, n: int) -> Slice:
        payload, used = encode_cells(
            self.flat[:, start : start + n],
            self.codebook_size,
            self.encoding,
            self.frequency_tables,
            self.context_tables,
            self.run(start),
        )
        return Slice(start, n, payload, used)


def _grow(coder: _Coder, piece: Slice, upper: int, budget_bytes: int) -> Slice:
    """The largest slice from ``piece.first_cell`` that still fits, by bisection between the cells
    of ``piece`` (fits) and ``upper`` (the estimate without the flush: an optimistic bound)."""
    start = piece.first_cell
    upper = min(upper, coder.flat.shape[1] - start)
    low, high = piece.num_cells, upper + 1  # low fits; high is known not to (or is beyond the map)
    while high - low > max(1, low // GROW_TOLERANCE):
        middle = (low + high) // 2
        candidate = coder.encode(start, middle)
        if len(candidate.payload) <= budget_bytes:
            low, piece = middle, candidate
        else:
            high = middle
    return piece


class _Estimate(NamedTuple):
    """Estimated bits of the cells of a run: ``bits(start, end)`` -> (S, end - start) per stream
    and cell, for a run that starts at ``start``; ``header_bytes`` before the S streams."""

    bits: Callable[[int, int], np.ndarray]
    header_bytes: int


def _size_estimate(flat: np.ndarray, encoding: Encoding, coder: _Coder) -> _Estimate:
    """ENTROPY: Q streams of -log2 p(index) under each stage's table (the same wherever the run
    starts). CONTEXT: one stream of ``context.cell_bits``, whose contexts depend on the start."""
    if encoding is Encoding.CONTEXT:
        tables = coder.context_tables
        cells = cell_symbols(flat, tables)  # the contexts, unlike the symbols, depend on the start

        def context_bits(start: int, end: int) -> np.ndarray:
            run = CellSymbols(cells.symbols[start:end], cells.escape_bits[start:end])
            return cell_bits(run, coder.run(start), tables)[None]

        return _Estimate(context_bits, 0)
    tables = coder.frequency_tables
    cost = -np.log2(tables / tables.sum(axis=1, keepdims=True))
    bits = np.take_along_axis(cost, flat.astype(np.int64), axis=1)
    return _Estimate(lambda start, end: bits[:, start:end], flat.shape[0] * STAGE_LENGTH_BYTES)


def _estimated_run(estimate: _Estimate, start: int, budget_bytes: int, floor: int) -> tuple[int, int]:
    """The most cells from ``start`` whose estimated payload fits the budget, with and without
    ``ENTROPY_SLACK_BITS`` per stream for the coder's flush (the second: an optimistic bound).

    Estimate: the header bytes plus, per stream, whole 32-bit words of its bits plus the slack.
    Searched in a window that doubles while every cell fits.
    """
    window = 4 * floor
    while True:
        bits = estimate.bits(start, start + window)
        cells = bits.shape[1]  # fewer than the window at the end of the map
        cumulative = np.cumsum(bits, axis=1)
        fitting, upper = (
            int(np.searchsorted(_estimated_bytes(estimate, cumulative, slack), budget_bytes, side="right"))
            for slack in (ENTROPY_SLACK_BITS, 0)
        )
        if upper < cells or cells < window:
            return fitting, upper
        window *= 2


def _estimated_bytes(estimate: _Estimate, cumulative: np.ndarray, slack_bits: float) -> np.ndarray:
    """(S, n) cumulative bits per stream -> (n,) estimated payload bytes of the first 1..n cells."""
    words = np.ceil((cumulative + slack_bits) / WORD_BITS).sum(axis=0)
    return estimate.header_bytes + (WORD_BITS // 8) * words


def check_slice_fields(
    *,
    slice_index: int,
    num_slices: int,
    first_cell: int,
    num_cells: int,
    height: int,
    width: int,
    interleave: int = 1,
) -> None:
    """The slice fields of one message against its (H, W) grid; raises SliceError."""
    check_interleave(interleave, height, width)
    total = int(height) * int(width)
    if not 1 <= num_slices <= min(MAX_SLICES, total):
        raise SliceError(f"num_slices = {num_slices} is outside 1..{min(MAX_SLICES, total)}")
    if not 0 <= slice_index < num_slices:
        raise SliceError(f"slice_index = {slice_index} is outside 0..{num_slices - 1}")
    if num_cells < 1 or first_cell < 0 or first_cell + num_cells > total:
        raise SliceError(
            f"cells [{first_cell}, {first_cell + num_cells}) are not a nonempty range inside the "
            f"{height} x {width} = {total} cells of the map"
        )


class SliceAssembly:
    """The slices of one frame received so far -> its (Q, H, W) indices and (H, W) validity.

    Memory: (Q, H * W) int64 plus H * W int64 (the cell order) and H * W and num_slices
    booleans, whatever arrives.
    """

    def __init__(
        self, num_quantizers: int, height: int, width: int, num_slices: int = 1, interleave: int = 1
    ) -> None:
        check_slice_fields(
            slice_index=0,
            num_slices=num_slices,
            first_cell=0,
            num_cells=1,
            height=height,
            width=width,
            interleave=interleave,
        )
        self.num_quantizers, self.height, self.width = int(num_quantizers), int(height), int(width)
        self.num_slices, self.interleave = int(num_slices), int(interleave)
        self._order = cell_order(height, width, interleave)
        self._indices = np.zeros((self.num_quantizers, self.height * self.width), dtype=np.int64)
        self._valid = np.zeros(self.height * self.width, dtype=bool)
        self._received = np.zeros(self.num_slices, dtype=bool)

    def add(
        self,
        first_cell: int,
        num_cells: int,
        indices: np.ndarray,
        *,
        slice_index: int = 0,
        num_slices: int = 1,
        interleave: int = 1,
    ) -> None:
        """Place one slice's (Q, num_cells) indices; raises SliceError (nothing changes) when it does
        not fit: fields out of range, num_slices or interleave unlike the frame's, a slice index
        or cells already received, or indices of the wrong shape."""
        check_slice_fields(
            slice_index=slice_index,
            num_slices=num_slices,
            first_cell=first_cell,
            num_cells=num_cells,
            height=self.height,
            width=self.width,
            interleave=interleave,
        )
        if num_slices != self.num_slices:
            raise SliceError(
                f"num_slices = {num_slices}, but this frame's first slice said {self.num_slices}"
            )
        if interleave != self.interleave:
            raise SliceError(
                f"interleave = {interleave}, but this frame's first slice said {self.interleave}"
            )
        if self._received[slice_index]:
            raise SliceError(f"slice {slice_index} of {num_slices} was already received")
        if np.shape(indices) != (self.num_quantizers, num_cells):
            raise SliceError(f"indices must be ({self.num_quantizers}, {num_cells}), got {np.shape(indices)}")
        cells = self._order[first_cell : first_cell + num_cells]
        if self._valid[cells].any():
            raise SliceError(f"cells [{first_cell}, {first_cell + num_cells}) overlap cells already received")
        self._indices[:, cells] = indices
        self._valid[cells] = True
        self._received[slice_index] = True

    @property
    def indices(self) -> np.ndarray:
        """(Q, H, W) int64, 0 in cells not received (a view: copy it to keep a snapshot)."""
        return self._indices.reshape(self.num_quantizers, self.height, self.width)

    @property
    def valid(self) -> np.ndarray:
        """(H, W) bool: the cells received (a view)."""
        return self._valid.reshape(self.height, self.width)

    @property
    def fraction(self) -> float:
        """Share of the map's cells received, in [0, 1]."""
        return float(self._valid.mean())

    def has(self, slice_index: int) -> bool:
        """Whether slice ``slice_index`` (in 0..num_slices - 1) arrived."""
        return bool(self._received[slice_index])

    @property
    def slices_received(self) -> int:
        return int(self._received.sum())

    @property
    def complete(self) -> bool:
        """Every one of the frame's num_slices slices arrived."""
        return bool(self._received.all())
