"""Context entropy model of the index maps: each cell's joint tuple, coded by its neighbours.

A cell's Q indices are one symbol: its joint tuple's position in an alphabet of the N most
frequent tuples of the training maps (``alphabet``, most frequent first, so symbol 0 is the
"empty" tuple of the cells without returns), or ESCAPE = N for any other tuple, whose Q
indices follow the run's symbols, each coded with its stage's escape table (the stage's counts
over the escaped training cells: rare tuples are busy cells, unlike the map's average). The
symbol is coded with the categorical model of its context: the class of the cell's up and
left neighbours, each 0 (its symbol is 0), 1 (any other symbol) or 2 (unknown: outside the
grid, or not coded before the cell in the same run), ``context = 3 * up + left``.

Neighbours follow the frame's cell order (``slices.cell_order``): with interleave s the up and
left neighbours of cell (r, c) are (r - s, c) and (r, c - s), the previous row and the previous
cell of its sub-grid. A run of cells (a slice, or a whole map) is coded on its own: a neighbour
before the run's first cell is unknown, so every slice decodes alone. Tables (``ContextTables``):
``alphabet`` (N, Q), ``counts`` (9, N + 1) and ``escape_counts`` (Q, K), int64, counts >= 1
(add-one smoothing), measured on training maps (``measure_context_tables``) and stored in the
frozen codec state (the codebook id covers them). Coding: one ``constriction`` 0.5
``queue.RangeEncoder`` stream with ``stream.model.Categorical(counts / sum, perfect=False)``
models, as ``entropy.py``.
Specified in docs/wire-format.md, "Encoding 2: CONTEXT".
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import constriction
import numpy as np

from revqom_nodes.codec.entropy import as_numpy, categorical
from revqom_nodes.codec.errors import WireFormatError

NUM_CONTEXTS = 9  # 3 classes (empty, other, unknown) of the up neighbour x 3 of the left one
UNKNOWN = 2  # the class of a neighbour outside the grid or not yet coded in the run
MAX_CONTEXT_SYMBOLS = 4096  # joint tuples in the alphabet, at most; symbol N is ESCAPE
DEFAULT_CONTEXT_SYMBOLS = 1024  # measured: 4096 saves 2% more bytes for 4x the table size
_MAX_TABLE_TOTAL = 2**62
_CACHE_SIZE = 16  # objects or grids whose derived values are kept (a process holds one or two models)


class ContextTables(NamedTuple):
    """alphabet (N, Q) int64: the joint tuples, most frequent first (row 0: the "empty" tuple);
    counts (NUM_CONTEXTS, N + 1) int64 >= 1: per context, the counts of the N tuples and ESCAPE;
    escape_counts (Q, K) int64 >= 1: per stage, the index counts of escaped cells."""

    alphabet: np.ndarray
    counts: np.ndarray
    escape_counts: np.ndarray


class CellRun(NamedTuple):
    """Where a run of cells lies: its map's (H, W) grid, the first cell's position in the frame's
    cell order and that order's interleave s (``slices.cell_order``)."""

    height: int
    width: int
    first_cell: int = 0
    interleave: int = 1


def joint_keys(indices: np.ndarray, codebook_size: int) -> np.ndarray:
    """(Q, ...) indices in [0, K) -> (...) int64 keys sum_q index_q * K**(Q - 1 - q) (tuple order)."""
    keys = np.zeros(indices.shape[1:], dtype=np.int64)
    for stage in indices:
        keys = keys * codebook_size + stage
    return keys


def neighbours(run: CellRun, num_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """The run positions (0 .. num_cells - 1) of each cell's up and left neighbour, -1 when the
    neighbour is outside the grid or before the run -> two (num_cells,) int64 arrays.
    Raises WireFormatError when the run does not fit its grid."""
    H, W, first, s = (int(v) for v in run)
    if not (1 <= s <= min(H, W) and 0 <= first and first + num_cells <= H * W):
        raise WireFormatError(
            f"cells [{first}, {first + num_cells}) of interleave {s} do not fit a {H} x {W} map"
        )
    up, left = (a[first : first + num_cells] - first for a in _grid_neighbours(H, W, s))
    return np.maximum(up, -1), np.maximum(left, -1)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _grid_neighbours(height: int, width: int, interleave: int) -> tuple[np.ndarray, np.ndarray]:
    """The cell-order positions of every cell's up and left neighbour in the whole map, -1 outside
    the grid -> two read-only (H * W,) int64 arrays, built once per grid (0.05 ms a slice)."""
    s = interleave
    rows = (height - np.arange(s) + s - 1) // s  # rows of sub-grid (a, b): those of a
    cols = (width - np.arange(s) + s - 1) // s  # columns: those of b
    widths = np.tile(cols, s)  # sub-grid g = a * s + b, in cell order
    starts = np.concatenate([[0], np.cumsum(np.repeat(rows, s) * widths)])
    position = np.arange(height * width, dtype=np.int64)
    grid = np.searchsorted(starts, position, side="right") - 1
    local = position - starts[grid]
    width_of = widths[grid]
    up = np.where(local >= width_of, position - width_of, -1)
    left = np.where(local % width_of >= 1, position - 1, -1)
    up.flags.writeable = left.flags.writeable = False
    return up, left


def _contexts(symbols: np.ndarray, up: np.ndarray, left: np.ndarray) -> np.ndarray:
    """(n,) symbols and neighbour positions -> (n,) context of each cell."""
    cls = (symbols != 0).astype(np.int64)
    up_class = np.where(up >= 0, cls[up], UNKNOWN)
    left_class = np.where(left >= 0, cls[left], UNKNOWN)
    return 3 * up_class + left_class


def _symbols(indices: np.ndarray, codebook_size: int, lookup: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """(Q, n) indices -> (n,) symbols: the tuple's alphabet row, or ESCAPE = N. ``lookup``: the
    alphabet's (N,) joint keys sorted and the (N,) rows that sort them (``_alphabet_lookup``)."""
    sorted_keys, order = lookup
    keys = joint_keys(indices, codebook_size)
    at = np.minimum(np.searchsorted(sorted_keys, keys), len(order) - 1)
    return np.where(sorted_keys[at] == keys, order[at], len(order))


def _alphabet_lookup(alphabet: np.ndarray, codebook_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, Q) alphabet -> its (N,) joint keys sorted and the (N,) rows that sort them."""
    keys = joint_keys(alphabet.T, codebook_size)
    order = np.argsort(keys)
    return keys[order], order


def measure_context_tables(
    indices_iterable: Iterable[Any],
    codebook_size: int,
    num_quantizers: int,
    max_symbols: int = DEFAULT_CONTEXT_SYMBOLS,
) -> ContextTables:
    """The alphabet of the ``max_symbols`` most frequent joint tuples (ties: the smaller tuple
    first), per-context counts and escape counts, plus one for every entry, over whole maps.

    Every cell is counted four times: in its context, and with its up neighbour, its left
    neighbour, both, taken as unknown, so that the unknown contexts hold the statistics of a
    slice's first row and cell anywhere in the map, not only those of the map's border
    (measured: slices of the bundled model 6% smaller, whole maps 2% larger).

    indices_iterable: arrays or tensors shaped (B, Q, H, W) or (Q, H, W), values in [0, K);
    each map is one run (interleave 1). Memory: the maps' joint keys, 8 bytes per cell.
    """
    K, Q = codebook_size, num_quantizers
    if not 1 <= max_symbols <= MAX_CONTEXT_SYMBOLS:
        raise ValueError(f"max_symbols must be in 1..{MAX_CONTEXT_SYMBOLS}, got {max_symbols}")
    maps = []
    for item in indices_iterable:
        arr = as_numpy(item)
        arr = arr[None] if arr.ndim == 3 else arr
        if arr.ndim != 4 or arr.shape[1] != Q:
            raise ValueError(f"indices must be (B, {Q}, H, W) or ({Q}, H, W), got {arr.shape}")
        if arr.size and (arr.min() < 0 or arr.max() >= K):
            raise ValueError(f"indices must lie in [0, {K}), got [{arr.min()}, {arr.max()}]")
        maps.extend(joint_keys(np.moveaxis(arr.astype(np.int64), 1, 0), K))
    if not maps:
        raise ValueError("no index maps to measure")
    keys, counts = np.unique(np.concatenate([m.ravel() for m in maps]), return_counts=True)
    top = keys[np.lexsort((keys, -counts))[:max_symbols]]
    alphabet = np.stack([(top // K ** (Q - 1 - q)) % K for q in range(Q)], axis=1)
    lookup = _alphabet_lookup(alphabet, K)
    table = np.ones((NUM_CONTEXTS, len(alphabet) + 1), dtype=np.int64)
    escape = np.ones((Q, K), dtype=np.int64)
    for keymap in maps:
        H, W = keymap.shape
        stages = np.stack([(keymap.ravel() // K ** (Q - 1 - q)) % K for q in range(Q)])
        symbols = _symbols(stages, K, lookup)
        up, left = neighbours(CellRun(H, W), H * W)
        cls = (symbols != 0).astype(np.int64)
        up_class, left_class = np.where(up >= 0, cls[up], UNKNOWN), np.where(left >= 0, cls[left], UNKNOWN)
        for u, v in ((up_class, left_class), (UNKNOWN, left_class), (up_class, UNKNOWN), (UNKNOWN, UNKNOWN)):
            np.add.at(table, (3 * u + v, symbols), 1)
        np.add.at(escape, (np.arange(Q)[:, None], stages[:, symbols == len(alphabet)]), 1)
    return ContextTables(alphabet.astype(np.int64), table, escape)


def validate_context_tables(tables: Any, num_quantizers: int, codebook_size: int) -> ContextTables:
    """Check (alphabet, counts, escape_counts) (``ContextTables``) for Q stages of K codewords;
    returns them as int64 arrays. Raises WireFormatError."""
    try:
        alphabet, counts, escape = (np.asarray(as_numpy(t)) for t in tables)
    except (TypeError, ValueError):
        raise WireFormatError("context tables must be (alphabet, counts, escape_counts)") from None
    for name, arr in (("alphabet", alphabet), ("counts", counts), ("escape_counts", escape)):
        if arr.dtype.kind not in "iu":
            raise WireFormatError(f"context {name} must be integers, got dtype {arr.dtype}")
    N = alphabet.shape[0] if alphabet.ndim == 2 else -1
    if alphabet.shape != (N, num_quantizers) or not 1 <= N <= MAX_CONTEXT_SYMBOLS:
        raise WireFormatError(
            f"context alphabet must be (N, num_quantizers) with 1 <= N <= {MAX_CONTEXT_SYMBOLS}, "
            f"got {alphabet.shape}"
        )
    alphabet, counts, escape = (a.astype(np.int64) for a in (alphabet, counts, escape))
    if alphabet.min() < 0 or alphabet.max() >= codebook_size:
        raise WireFormatError(f"context alphabet entries must lie in [0, {codebook_size})")
    if np.unique(joint_keys(alphabet.T, codebook_size)).size != N:
        raise WireFormatError("context alphabet holds a tuple twice")
    if counts.shape != (NUM_CONTEXTS, N + 1):
        raise WireFormatError(f"context counts must be ({NUM_CONTEXTS}, N + 1 = {N + 1}), got {counts.shape}")
    if escape.shape != (num_quantizers, codebook_size):
        raise WireFormatError(
            f"context escape_counts must be (num_quantizers, codebook_size) = "
            f"({num_quantizers}, {codebook_size}), got {escape.shape}"
        )
    for arr in (counts, escape):
        if arr.min() < 1:
            raise WireFormatError("every context count must be >= 1 (add-one smoothing)")
        if int(arr.sum(axis=1).max()) > _MAX_TABLE_TOTAL:
            raise WireFormatError("context count totals exceed 2**62")
    return ContextTables(alphabet, counts, escape)


class CellSymbols(NamedTuple):
    """What sizing runs of cells needs, wherever a run starts: ``symbols`` (n,) int64, each
    cell's symbol (ESCAPE = N for a tuple outside the alphabet), and ``escape_bits`` (n,) float64,
    the escape-table bits of an escaped cell's Q indices (0 for the others)."""

    symbols: np.ndarray
    escape_bits: np.ndarray


def cell_symbols(indices: np.ndarray, tables: ContextTables) -> CellSymbols:
    """(Q, n) indices in [0, K) -> their ``CellSymbols`` under ``tables``."""
    coding = _coding(tables)
    symbols = _symbols(indices, coding.codebook_size, coding.lookup)
    escape_bits = np.zeros(len(symbols))
    escaped = symbols == len(tables.alphabet)
    if escaped.any():
        stages = np.arange(indices.shape[0])[:, None]
        escape_bits[escaped] = coding.index_bits[stages, indices[:, escaped]].sum(axis=0)
    return CellSymbols(symbols, escape_bits)


def cell_bits(cells: CellSymbols, run: CellRun, tables: ContextTables) -> np.ndarray:
    """``CellSymbols`` of the n cells of ``run`` -> (n,) bits of each cell under the model:
    -log2 p(symbol | context), plus the escape-table bits of an escaped cell (the size estimate)."""
    contexts = _contexts(cells.symbols, *neighbours(run, len(cells.symbols)))
    return _coding(tables).symbol_bits[contexts, cells.symbols] + cells.escape_bits


def encode_run(indices: np.ndarray, run: CellRun, tables: ContextTables) -> bytes:
    """(Q, n) indices of a run in [0, K) -> one range-coded stream, little-endian 32-bit words.

    Coded sequence: every cell's symbol under its context's model, in the run's order; then, per
    stage q, the stage-q indices of the escaped cells in that order under escape model q (a
    symbol's class does not depend on which tuple it escapes, so the contexts need none of them).
    """
    coding = _coding(tables)
    symbols = _symbols(indices, coding.codebook_size, coding.lookup)
    contexts = _contexts(symbols, *neighbours(run, indices.shape[1]))
    return _encode(symbols, contexts, indices[:, symbols == len(tables.alphabet)], coding.models)


def _encode(symbols: np.ndarray, contexts: np.ndarray, escaped: np.ndarray, models: list[Any]) -> bytes:
    """(n,) symbols, (n,) their contexts and (Q, e) the indices of the e escaped cells -> the
    stream. Consecutive symbols of one context are coded in one call, a lone symbol as a Python
    int (most runs of one context are a single cell; an array view costs more than the coding)."""
    encoder = constriction.stream.queue.RangeEncoder()
    encode = encoder.encode
    breaks = np.concatenate([[0], np.flatnonzero(np.diff(contexts)) + 1, [len(contexts)]]).tolist()
    values = symbols.astype(np.int32)
    symbol_list, context_list = values.tolist(), contexts.tolist()
    for a, b in itertools.pairwise(breaks):
        encode(symbol_list[a] if b - a == 1 else values[a:b], models[context_list[a]])
    if escaped.size:
        for q, stage in enumerate(escaped.astype(np.int32)):
            encode(stage, models[NUM_CONTEXTS + q])
    return encoder.get_compressed().astype("<u4").tobytes()


def decode_run(stream: bytes, num_cells: int, run: CellRun, tables: ContextTables) -> np.ndarray:
    """Inverse of ``encode_run`` -> (Q, num_cells) int64. Raises WireFormatError when the stream
    does not decode, has data left over, escapes a tuple of the alphabet, or is not exactly what
    ``encode_run`` makes of the decoded cells (so every run has one valid stream)."""
    coding = _coding(tables)
    Q, N = tables.escape_counts.shape[0], len(tables.alphabet)
    up, left = neighbours(run, num_cells)
    words = np.frombuffer(stream, dtype="<u4").astype(np.uint32)
    try:
        decoder = constriction.stream.queue.RangeDecoder(words)
        symbols = np.asarray(_decode_symbols(decoder, coding.models, up.tolist(), left.tolist()))
        escaped = symbols == N
        count = int(escaped.sum())
        stages = np.stack([decoder.decode(coding.models[NUM_CONTEXTS + q], count) for q in range(Q)])
        exhausted = decoder.maybe_exhausted()
    except Exception as exc:  # constriction reports invalid data with AssertionError or ValueError
        raise WireFormatError(f"CONTEXT stream is invalid for the context tables: {exc}") from exc
    if not exhausted:
        raise WireFormatError("CONTEXT stream has data left after its last cell")
    if count and (_symbols(stages, coding.codebook_size, coding.lookup) != N).any():
        raise WireFormatError("CONTEXT stream escapes a tuple that is in the alphabet")
    # Coded again, the decoded symbols and escapes (what encode_run makes of the decoded cells)
    # must give the stream: e.g. zero words after its end decode alike
    if _encode(symbols, _contexts(symbols, up, left), stages, coding.models) != stream:
        raise WireFormatError("CONTEXT stream is not the encoding of the cells it decodes to")
    out = tables.alphabet[np.minimum(symbols, N - 1)].T.copy()
    out[:, escaped] = stages
    return out


def _decode_symbols(decoder: Any, models: list[Any], up: list[int], left: list[int]) -> list[int]:
    """The run's symbols, one ``decoder.decode`` call per cell: its context comes from the cells
    decoded before it. up, left: each cell's neighbour positions in the run, -1 when unknown."""
    num_cells = len(up)
    classes = [0] * num_cells + [UNKNOWN]  # position -1 reads the last entry: unknown
    symbols = [0] * num_cells
    decode = decoder.decode
    for i, u, v in zip(range(num_cells), up, left, strict=True):
        symbol = decode(models[3 * classes[u] + classes[v]])
        symbols[i] = symbol
        classes[i] = symbol != 0
    return symbols


def checked_tables(tables: Any, num_quantizers: int, codebook_size: int) -> ContextTables:
    """``validate_context_tables``, done once per tables object (a codec state's, used for every
    slice: its validation took 0.4 ms a slice)."""

    def check() -> ContextTables:
        return validate_context_tables(tables, num_quantizers, codebook_size)

    return _once(("tables", num_quantizers, codebook_size), tables, check)


class _Coding(NamedTuple):
    """What coding with one ``ContextTables`` needs, derived once: ``models``, the NUM_CONTEXTS
    context models then the Q escape models; ``lookup``, the alphabet's sorted joint keys and
    rows (``_alphabet_lookup``); ``symbol_bits`` (NUM_CONTEXTS, N + 1) and ``index_bits``
    (Q, K), -log2 p of each symbol per context and of each escaped index per stage; K."""

    models: list[Any]
    lookup: tuple[np.ndarray, np.ndarray]
    symbol_bits: np.ndarray
    index_bits: np.ndarray
    codebook_size: int


def _coding(tables: ContextTables) -> _Coding:
    """The ``_Coding`` of ``tables``, built once per tables object (models: 0.2 ms each time)."""

    def build() -> _Coding:
        K = tables.escape_counts.shape[1]
        return _Coding(
            [categorical(c) for c in tables.counts] + [categorical(t) for t in tables.escape_counts],
            _alphabet_lookup(tables.alphabet, K),
            -np.log2(tables.counts / tables.counts.sum(axis=1, keepdims=True)),
            -np.log2(tables.escape_counts / tables.escape_counts.sum(axis=1, keepdims=True)),
            K,
        )

    return _once(("coding",), tables, build)


_cache: dict[tuple[Any, ...], tuple[Any, Any]] = {}


def _once(kind: tuple[Any, ...], obj: Any, make: Callable[[], Any]) -> Any:
    """``make()`` for ``obj``, computed once while ``obj`` stays in the cache. The cache holds
    ``obj`` itself, so its id cannot be reused by another object meanwhile."""
    key = (*kind, id(obj))
    hit = _cache.get(key)
    if hit is not None and hit[0] is obj:
        return hit[1]
    value = make()
    if len(_cache) >= _CACHE_SIZE:
        _cache.clear()
    _cache[key] = (obj, value)
    return value
