"""The wire format of one agent's index map (specified byte by byte in docs/wire-format.md).

PACKED: the (Q, H, W) indices in C order (stage-major, then rows, then columns), each written
as b = ceil(log2 K) bits, most significant bit first, into one big-endian bit stream; the last
byte is padded with zero bits. Exactly ceil(Q * H * W * b / 8) bytes, no header.

ENTROPY: Q little-endian uint32 stage lengths in bytes, then the Q range-coded stage streams
(``entropy.encode_stage``). Only sent when strictly smaller than PACKED.

CONTEXT: one range-coded stream of the cells' joint tuples under the context model
(``context.encode_run``), no header. Only sent when strictly smaller than PACKED.

Everything else (H, W, Q, K, encoding, codebook id) travels in the message fields beside the
payload; ``decode_payload`` checks them and the payload before allocating anything sized by them.
``encode_cells`` / ``decode_cells`` apply the same format to a (Q, N) run of cells in row-major
order (a slice, ``codec/slices.py``); the whole map is the run of all H * W cells.
"""

from __future__ import annotations

import enum
import math
import re
from typing import Any

import numpy as np

from revqom_nodes.codec.config import MAX_CODEBOOK_SIZE, MAX_NUM_QUANTIZERS
from revqom_nodes.codec.context import CellRun, ContextTables, checked_tables, decode_run, encode_run
from revqom_nodes.codec.entropy import decode_stage, encode_stage, validate_frequency_tables
from revqom_nodes.codec.errors import WireFormatError

MAX_GRID_SIZE = 4096
MAX_CELLS = MAX_GRID_SIZE * MAX_GRID_SIZE  # cells in one run (a slice or a whole map)
STAGE_LENGTH_BYTES = 4
_HEX_ID = re.compile(r"[0-9a-f]{64}")


class Encoding(enum.IntEnum):
    """Payload encodings; the values are the EncodedBEV.msg ENCODING_* constants."""

    PACKED = 0
    ENTROPY = 1
    CONTEXT = 2


def bits_per_index(codebook_size: int) -> int:
    """b = ceil(log2 K): 1 for K = 2, 6 for K = 64, 3 for K = 5."""
    return (int(codebook_size) - 1).bit_length()


def packed_size(height: int, width: int, num_quantizers: int, codebook_size: int) -> int:
    """Bytes of a PACKED payload: ceil(H * W * Q * b / 8)."""
    return (height * width * num_quantizers * bits_per_index(codebook_size) + 7) // 8


def _check_int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise WireFormatError(f"{name} must be an int, got {type(value).__name__}")
    if not low <= int(value) <= high:
        raise WireFormatError(f"{name} = {value} is outside {low}..{high}")
    return int(value)


def _check_shape(
    height: Any, width: Any, num_quantizers: Any, codebook_size: Any
) -> tuple[int, int, int, int]:
    return (
        _check_int("height", height, 1, MAX_GRID_SIZE),
        _check_int("width", width, 1, MAX_GRID_SIZE),
        _check_int("num_quantizers", num_quantizers, 1, MAX_NUM_QUANTIZERS),
        _check_int("codebook_size", codebook_size, 2, MAX_CODEBOOK_SIZE),
    )


def _check_encoding(encoding: Any) -> Encoding:
    try:
        return Encoding(encoding)
    except ValueError:
        raise WireFormatError(
            f"unknown encoding {encoding!r}; valid: {[e.value for e in Encoding]}"
        ) from None


def _check_range(values: np.ndarray, codebook_size: int) -> None:
    if values.size and (values.min() < 0 or values.max() >= codebook_size):
        raise WireFormatError(
            f"index out of range: values span [{values.min()}, {values.max()}], "
            f"codebook_size is {codebook_size}"
        )


_WORDS = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def _group_layout(bits: int) -> tuple[int, int]:
    """(indices per group, bytes per group): the shortest run of indices filling whole bytes."""
    per_group = 8 // math.gcd(bits, 8)
    return per_group, per_group * bits // 8


def pack_indices(flat: np.ndarray, bits: int) -> bytes:
    """(N,) integers < 2**bits -> ceil(N * bits / 8) bytes, MSB-first bit stream (bits in 1..12).

    Each byte-aligned group of g indices (g = 8 / gcd(b, 8)) is assembled into one unsigned
    word with g shift-or steps over all groups at once, then written big-endian; groups of more
    than 64 bits (b = 9, 11) are split into two words of 4 indices each.
    """
    n = flat.size
    per_group, group_bytes = _group_layout(bits)
    groups = -(-n // per_group)
    if group_bytes > 8:
        return _pack_wide(flat, bits, groups)[: (n * bits + 7) // 8]
    word_bytes = 1 << (group_bytes - 1).bit_length()
    dtype = _WORDS[word_bytes]
    values = np.zeros(groups * per_group, dtype=dtype)
    values[:n] = flat
    values = values.reshape(groups, per_group)
    word = values[:, 0].copy()
    for i in range(1, per_group):
        word <<= dtype(bits)
        word |= values[:, i]
    big_endian = word.astype(np.dtype(dtype).newbyteorder(">")).view(np.uint8).reshape(groups, word_bytes)
    return big_endian[:, word_bytes - group_bytes :].tobytes()[: (n * bits + 7) // 8]


def _pack_wide(flat: np.ndarray, bits: int, groups: int) -> bytes:
    """Groups of 8 indices (8 * bits bytes, bits in 9..11) as a 128-bit big-endian (hi, lo) pair."""
    values = np.zeros(groups * 8, dtype=np.uint64)
    values[: flat.size] = flat
    values = values.reshape(groups, 8)
    half = np.uint64(4 * bits)
    shifts = np.arange(3, -1, -1, dtype=np.uint64) * np.uint64(bits)
    first = (values[:, :4] << shifts).sum(axis=1, dtype=np.uint64)
    second = (values[:, 4:] << shifts).sum(axis=1, dtype=np.uint64)
    words = np.empty((groups, 2), dtype=">u8")
    words[:, 0] = first >> (np.uint64(64) - half)
    words[:, 1] = (first << half) | second
    return words.view(np.uint8).reshape(groups, 16)[:, 16 - bits :].tobytes()


def unpack_indices(data: np.ndarray, count: int, bits: int) -> np.ndarray:
    """Inverse of ``pack_indices``: (ceil(count * bits / 8),) uint8 -> (count,) int64."""
    per_group, group_bytes = _group_layout(bits)
    groups = -(-count // per_group)
    padded = np.zeros(groups * group_bytes, dtype=np.uint8)
    padded[: data.size] = data
    if group_bytes > 8:
        return _unpack_wide(padded, bits, groups)[:count]
    word_bytes = 1 << (group_bytes - 1).bit_length()
    dtype = _WORDS[word_bytes]
    raw = np.zeros((groups, word_bytes), dtype=np.uint8)
    raw[:, word_bytes - group_bytes :] = padded.reshape(groups, group_bytes)
    word = raw.view(np.dtype(dtype).newbyteorder(">")).reshape(groups).astype(dtype)
    values = np.empty((groups, per_group), dtype=np.int64)
    mask = dtype((1 << bits) - 1)
    for i in range(per_group):
        values[:, i] = (word >> dtype(bits * (per_group - 1 - i))) & mask
    return values.reshape(-1)[:count]


def _unpack_wide(padded: np.ndarray, bits: int, groups: int) -> np.ndarray:
    raw = np.zeros((groups, 16), dtype=np.uint8)
    raw[:, 16 - bits :] = padded.reshape(groups, bits)
    words = raw.view(">u8").astype(np.uint64)
    half = np.uint64(4 * bits)
    first = (words[:, 0] << (np.uint64(64) - half)) | (words[:, 1] >> half)
    second = words[:, 1] & ((np.uint64(1) << half) - np.uint64(1))
    shifts = np.arange(3, -1, -1, dtype=np.uint64) * np.uint64(bits)
    mask = np.uint64((1 << bits) - 1)
    values = np.empty((groups, 8), dtype=np.uint64)
    values[:, :4] = (first[:, None] >> shifts) & mask
    values[:, 4:] = (second[:, None] >> shifts) & mask
    return values.reshape(-1).astype(np.int64)


def encode_payload(
    indices: np.ndarray,
    codebook_size: int,
    encoding: Encoding = Encoding.PACKED,
    frequency_tables: np.ndarray | None = None,
    context_tables: ContextTables | None = None,
) -> tuple[bytes, Encoding]:
    """(Q, H, W) integer indices in [0, K) -> (payload, encoding actually used).

    ENTROPY and CONTEXT fall back to PACKED when their payload is not strictly smaller; put the
    returned encoding into the message. Raises WireFormatError for bad shapes, values or tables.
    """
    indices = np.asarray(indices)
    if indices.ndim != 3 or indices.dtype.kind not in "iu":
        raise WireFormatError(
            f"indices must be a (Q, H, W) integer array, got {indices.shape} {indices.dtype}"
        )
    Q, H, W = indices.shape
    _check_shape(H, W, Q, codebook_size)
    return encode_cells(
        indices.reshape(Q, H * W), codebook_size, encoding, frequency_tables, context_tables, CellRun(H, W)
    )


def encode_cells(
    indices: np.ndarray,
    codebook_size: int,
    encoding: Encoding = Encoding.PACKED,
    frequency_tables: np.ndarray | None = None,
    context_tables: ContextTables | None = None,
    run: CellRun | None = None,
) -> tuple[bytes, Encoding]:
    """(Q, N) indices of a run of N cells in the frame's cell order -> (payload, encoding used).

    The payload of the whole map is this with N = H * W; a slice (codec/slices.py) is a shorter
    run. CONTEXT needs the context tables and ``run``, where the cells lie (their neighbours).
    """
    indices = np.asarray(indices)
    if indices.ndim != 2 or indices.dtype.kind not in "iu":
        raise WireFormatError(f"indices must be a (Q, N) integer array, got {indices.shape} {indices.dtype}")
    Q, N = indices.shape
    _check_int("num_cells", N, 1, MAX_CELLS)
    _check_int("num_quantizers", Q, 1, MAX_NUM_QUANTIZERS)
    _check_int("codebook_size", codebook_size, 2, MAX_CODEBOOK_SIZE)
    encoding = _check_encoding(encoding)
    _check_range(indices, codebook_size)
    packed = pack_indices(indices.reshape(-1), bits_per_index(codebook_size))
    if encoding is Encoding.PACKED:
        return packed, Encoding.PACKED
    if encoding is Encoding.CONTEXT:
        payload = encode_run(indices, run, _context_tables(context_tables, run, Q, codebook_size))
    else:
        if frequency_tables is None:
            raise WireFormatError("ENTROPY encoding needs frequency tables; this codec state has none")
        tables = validate_frequency_tables(frequency_tables, Q, codebook_size)
        streams = [encode_stage(indices[q], tables[q]) for q in range(Q)]
        payload = np.array([len(s) for s in streams], dtype="<u4").tobytes() + b"".join(streams)
    if len(payload) < len(packed):
        return payload, encoding
    return packed, Encoding.PACKED


def _context_tables(
    context_tables: ContextTables | None, run: CellRun | None, num_quantizers: int, codebook_size: int
) -> ContextTables:
    if context_tables is None:
        raise WireFormatError("CONTEXT encoding needs context tables; this codec state has none")
    if run is None:
        raise WireFormatError("CONTEXT encoding needs the run's place in its map (CellRun)")
    return checked_tables(context_tables, num_quantizers, codebook_size)


def decode_payload(
    payload: Any,
    *,
    height: int,
    width: int,
    num_quantizers: int,
    codebook_size: int,
    encoding: Encoding | int,
    frequency_tables: np.ndarray | None = None,
    context_tables: ContextTables | None = None,
) -> np.ndarray:
    """Payload bytes plus the message fields -> (Q, H, W) int64 indices in [0, K).

    payload: any bytes-like object (bytes, bytearray, memoryview, array('B'), uint8 array).
    Raises WireFormatError for every violation, before allocating anything sized by the fields.
    """
    H, W, Q, K = _check_shape(height, width, num_quantizers, codebook_size)
    values = decode_cells(
        payload,
        num_cells=H * W,
        num_quantizers=Q,
        codebook_size=K,
        encoding=encoding,
        frequency_tables=frequency_tables,
        context_tables=context_tables,
        run=CellRun(H, W),
    )
    return values.reshape(Q, H, W)


def decode_cells(
    payload: Any,
    *,
    num_cells: int,
    num_quantizers: int,
    codebook_size: int,
    encoding: Encoding | int,
    frequency_tables: np.ndarray | None = None,
    context_tables: ContextTables | None = None,
    run: CellRun | None = None,
) -> np.ndarray:
    """Payload of a run of N cells -> (Q, N) int64 indices in [0, K); the checks of ``decode_payload``.
    CONTEXT needs ``run``: where the cells lie in their map (the message's grid and slice fields)."""
    N = _check_int("num_cells", num_cells, 1, MAX_CELLS)
    Q = _check_int("num_quantizers", num_quantizers, 1, MAX_NUM_QUANTIZERS)
    K = _check_int("codebook_size", codebook_size, 2, MAX_CODEBOOK_SIZE)
    encoding = _check_encoding(encoding)
    try:
        data = np.frombuffer(payload, dtype=np.uint8)
    except (TypeError, ValueError) as exc:
        raise WireFormatError(f"payload must be bytes-like, got {type(payload).__name__}") from exc
    bits = bits_per_index(K)
    expected = (N * Q * bits + 7) // 8
    if encoding is Encoding.PACKED:
        if data.size != expected:
            raise WireFormatError(
                f"PACKED payload is {data.size} bytes, expected {expected} for {N} cells, Q={Q} K={K}"
            )
        pad = expected * 8 - N * Q * bits
        if pad and int(data[-1]) & ((1 << pad) - 1):
            raise WireFormatError(f"PACKED payload has nonzero padding in its last {pad} bits")
        values = unpack_indices(data, N * Q, bits)
        if K & (K - 1):  # b bits can hold values >= K only when K is not a power of two
            _check_range(values, K)
        return values.reshape(Q, N)
    if encoding is Encoding.CONTEXT:
        return _decode_context(data, N, Q, K, expected, context_tables, run)
    return _decode_entropy(data, N, Q, K, expected, frequency_tables)


def _decode_context(
    data: np.ndarray,
    N: int,
    Q: int,
    K: int,
    packed_bytes: int,
    context_tables: ContextTables | None,
    run: CellRun | None,
) -> np.ndarray:
    if context_tables is None:
        raise WireFormatError("CONTEXT payload received but this codec state has no context tables")
    tables = _context_tables(context_tables, run, Q, K)
    if not 0 < data.size < packed_bytes or data.size % 4:
        raise WireFormatError(
            f"CONTEXT payload is {data.size} bytes; it must be a nonzero multiple of 4 "
            f"smaller than the PACKED size {packed_bytes}"
        )
    return decode_run(data.tobytes(), N, run, tables)


def _decode_entropy(
    data: np.ndarray, N: int, Q: int, K: int, packed_bytes: int, frequency_tables: np.ndarray | None
) -> np.ndarray:
    if frequency_tables is None:
        raise WireFormatError("ENTROPY payload received but this codec state has no frequency tables")
    tables = validate_frequency_tables(frequency_tables, Q, K)
    header_bytes = Q * STAGE_LENGTH_BYTES
    if not header_bytes <= data.size < packed_bytes:
        raise WireFormatError(
            f"ENTROPY payload is {data.size} bytes; it must be at least the {header_bytes}-byte "
            f"header and smaller than the PACKED size {packed_bytes}"
        )
    lengths = data[:header_bytes].view("<u4").astype(np.int64)
    if np.any(lengths % 4):
        raise WireFormatError(f"ENTROPY stage lengths {lengths.tolist()} must be multiples of 4")
    if int(lengths.sum()) != data.size - header_bytes:
        raise WireFormatError(
            f"ENTROPY stage lengths {lengths.tolist()} sum to {int(lengths.sum())}, "
            f"but {data.size - header_bytes} bytes follow the header"
        )
    offsets = header_bytes + np.concatenate([[0], np.cumsum(lengths)])
    stages = [decode_stage(data[offsets[q] : offsets[q + 1]].tobytes(), N, tables[q]) for q in range(Q)]
    values = np.stack(stages)
    _check_range(values, K)
    return values


def check_codebook_id(received: str, expected: str) -> None:
    """Refuse indices that refer to another codebook. Raises WireFormatError on any mismatch."""
    if not isinstance(received, str) or not _HEX_ID.fullmatch(received):
        raise WireFormatError(f"codebook_id {received!r} is not a 64-character lowercase SHA-256 hex string")
    if received != expected:
        raise WireFormatError(
            f"codebook_id mismatch: message refers to {received[:12]}..., "
            f"this receiver holds {expected[:12]}... (codebooks are not shared)"
        )
