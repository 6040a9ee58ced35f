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
    rows = (H - np.arange(s) + s - 1) // s  # rows of sub-grid (a, b): those of a
    cols = (W - np.arange(s) + s - 1) // s  # columns: those of b
    widths = np.tile(cols, s)  # sub-grid g = a * s + b, in cell order
    starts = np.concatenate([[0], np.cumsum(np.repeat(rows, s) * widths)])
    position = first + np.arange(num_cells, dtype=np.int64)
    grid = np.searchsorted(starts, position, side="right") - 1
    local = position - starts[grid]
    width = widths[grid]
    up = np.where(local >= width, position - width, -1)
    left = np.where(local % width >= 1, position - 1, -1)
    return np.where(up >= first, up - first, -1), np.where(left >= first, left - first, -1)


def _contexts(symbols: np.ndarray, up: np.ndarray, left: np.ndarray) -> np.ndarray:
    """(n,) symbols and neighbour positions -> (n,) context of each cell."""
    cls = (symbols != 0).astype(np.int64)
    up_class = np.where(up >= 0, cls[up], UNKNOWN)
    left_class = np.where(left >= 0, cls[left], UNKNOWN)
    return 3 * up_class + left_class


def _symbols(indices: np.ndarray, codebook_size: int, alphabet: np.ndarray) -> np.ndarray:
    """(Q, n) indices -> (n,) symbols: the tuple's alphabet row, or ESCAPE = N."""
    keys = joint_keys(indices, codebook_size)
    alphabet_keys = joint_keys(alphabet.T, codebook_size)
    order = np.argsort(alphabet_keys)
    at = np.minimum(np.searchsorted(alphabet_keys, keys, sorter=order), len(order) - 1)
    found = alphabet_keys[order[at]] == keys
    return np.where(found, order[at], len(alphabet))


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
    table = np.ones((NUM_CONTEXTS, len(alphabet) + 1), dtype=np.int64)
    escape = np.ones((Q, K), dtype=np.int64)
    for keymap in maps:
        H, W = keymap.shape
        stages = np.stack([(keymap.ravel() // K ** (Q - 1 - q)) % K for q in range(Q)])
        symbols = _symbols(stages, K, alphabet)
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


def cell_bits(indices: np.ndarray, run: CellRun, tables: ContextTables) -> np.ndarray:
    """(Q, n) indices of a run -> (n,) bits of each cell under the model: -log2 p(symbol |
    context), plus the escape-table costs of an escaped cell's indices (the size estimate)."""
    K = tables.escape_counts.shape[1]
    symbols = _symbols(indices, K, tables.alphabet)
    contexts = _contexts(symbols, *neighbours(run, indices.shape[1]))
    cost = -np.log2(tables.counts / tables.counts.sum(axis=1, keepdims=True))
    bits = cost[contexts, symbols]
    escaped = symbols == len(tables.alphabet)
    if escaped.any():
        escape = tables.escape_counts
        stage_cost = -np.log2(escape / escape.sum(axis=1, keepdims=True))
        stages = np.arange(indices.shape[0])[:, None]
        bits[escaped] += stage_cost[stages, indices[:, escaped]].sum(axis=0)
    return bits


def encode_run(indices: np.ndarray, run: CellRun, tables: ContextTables) -> bytes:
    """(Q, n) indices of a run in [0, K) -> one range-coded stream, little-endian 32-bit words.

    Coded sequence: every cell's symbol under its context's model, in the run's order; then, per
    stage q, the stage-q indices of the escaped cells in that order under escape model q (a
    symbol's class does not depend on which tuple it escapes, so the contexts need none of them).
    Consecutive symbols of one model are coded in one call.
    """
    K, N = tables.escape_counts.shape[1], len(tables.alphabet)
    symbols = _symbols(indices, K, tables.alphabet)
    contexts = _contexts(symbols, *neighbours(run, indices.shape[1]))
    models = _models(tables)
    encoder = constriction.stream.queue.RangeEncoder()
    breaks = np.concatenate([[0], np.flatnonzero(np.diff(contexts)) + 1, [len(contexts)]]).tolist()
    values = symbols.astype(np.int32)
    for a, b in itertools.pairwise(breaks):
        encoder.encode(values[a:b], models[int(contexts[a])])
    escaped = symbols == N
    if escaped.any():
        for q, stage in enumerate(indices[:, escaped].astype(np.int32)):
            encoder.encode(stage, models[NUM_CONTEXTS + q])
    return encoder.get_compressed().astype("<u4").tobytes()


def decode_run(stream: bytes, num_cells: int, run: CellRun, tables: ContextTables) -> np.ndarray:
    """Inverse of ``encode_run`` -> (Q, num_cells) int64. Raises WireFormatError when the stream
    does not decode, has data left over, escapes a tuple of the alphabet, or is not exactly what
    ``encode_run`` makes of the decoded cells (so every run has one valid stream)."""
    (Q, K), N = tables.escape_counts.shape, len(tables.alphabet)
    up, left = (a.tolist() for a in neighbours(run, num_cells))
    models = _models(tables)
    symbols = [0] * num_cells
    words = np.frombuffer(stream, dtype="<u4").astype(np.uint32)
    try:
        decoder = constriction.stream.queue.RangeDecoder(words)
        for i in range(num_cells):
            u, v = up[i], left[i]
            context = 3 * (UNKNOWN if u < 0 else symbols[u] != 0) + (UNKNOWN if v < 0 else symbols[v] != 0)
            symbols[i] = decoder.decode(models[context])
        codes = np.asarray(symbols, dtype=np.int64)
        escaped = codes == N
        stages = [decoder.decode(models[NUM_CONTEXTS + q], int(escaped.sum())) for q in range(Q)]
        exhausted = decoder.maybe_exhausted()
    except Exception as exc:  # constriction reports invalid data with AssertionError or ValueError
        raise WireFormatError(f"CONTEXT stream is invalid for the context tables: {exc}") from exc
    if not exhausted:
        raise WireFormatError("CONTEXT stream has data left after its last cell")
    out = tables.alphabet[np.minimum(codes, N - 1)].T.copy()
    if escaped.any():
        tuples = np.stack(stages).astype(np.int64)
        if (_symbols(tuples, K, tables.alphabet) != N).any():
            raise WireFormatError("CONTEXT stream escapes a tuple that is in the alphabet")
        out[:, escaped] = tuples
    if encode_run(out, run, tables) != stream:  # e.g. zero words after the end, which decode alike
        raise WireFormatError("CONTEXT stream is not the encoding of the cells it decodes to")
    return out


def checked_tables(tables: Any, num_quantizers: int, codebook_size: int) -> ContextTables:
    """``validate_context_tables``, done once per tables object (a codec state's, used for every
    slice: its validation took 0.4 ms a slice)."""

    def check() -> ContextTables:
        return validate_context_tables(tables, num_quantizers, codebook_size)

    return _once(("tables", num_quantizers, codebook_size), tables, check)


def _models(tables: ContextTables) -> list[Any]:
    """The NUM_CONTEXTS context models, then the Q stage models of escaped cells; built once per
    tables object (0.2 ms each time)."""

    def build() -> list[Any]:
        return [categorical(c) for c in tables.counts] + [categorical(t) for t in tables.escape_counts]

    return _once(("models",), tables, build)


_CACHE_SIZE = 16  # objects whose derived values are kept (a process holds one or two models)
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
