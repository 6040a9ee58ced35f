"""Static per-stage entropy model of the index maps: frequency tables and range coding.

Tables are (Q, K) int64 symbol counts, every entry >= 1 (add-one smoothing), measured on
training indices and stored in the frozen codec state. Each stage is coded with
``constriction`` 0.5's ``queue.RangeEncoder`` and ``stream.model.Categorical(counts / sum,
perfect=False)``; sender and receiver must use the same tables (the codebook id covers them)
and the same constriction release (pinned in tools/requirements.txt).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import constriction
import numpy as np

from revqom_nodes.codec.errors import WireFormatError

_MAX_TABLE_TOTAL = 2**62


def as_numpy(indices: Any) -> np.ndarray:
    if hasattr(indices, "detach"):  # a torch tensor, on any device
        indices = indices.detach().cpu().numpy()
    return np.asarray(indices)


def measure_frequency_tables(
    indices_iterable: Iterable[Any], codebook_size: int, num_quantizers: int
) -> np.ndarray:
    """Count symbols per stage over index maps, plus one for every symbol.

    indices_iterable: arrays or tensors shaped (B, Q, H, W) or (Q, H, W), values in [0, K).
    Returns (Q, K) int64 tables, every entry >= 1 so that every symbol stays codable.
    """
    K, Q = codebook_size, num_quantizers
    counts = np.ones((Q, K), dtype=np.int64)
    for item in indices_iterable:
        arr = as_numpy(item)
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4 or arr.shape[1] != Q:
            raise ValueError(f"indices must be (B, {Q}, H, W) or ({Q}, H, W), got {arr.shape}")
        if arr.size and (arr.min() < 0 or arr.max() >= K):
            raise ValueError(f"indices must lie in [0, {K}), got [{arr.min()}, {arr.max()}]")
        stage_major = np.moveaxis(arr, 1, 0).reshape(Q, -1).astype(np.int64)
        counts += np.bincount((stage_major + np.arange(Q)[:, None] * K).ravel(), minlength=Q * K).reshape(
            Q, K
        )
    return counts


def empirical_entropy_bits(indices: Any, codebook_size: int) -> np.ndarray:
    """Per-stage empirical entropy in bits per index of (Q, H, W) or (B, Q, H, W) indices -> (Q,)."""
    arr = as_numpy(indices)
    if arr.ndim == 3:
        arr = arr[None]
    Q = arr.shape[1]
    stage_major = np.moveaxis(arr, 1, 0).reshape(Q, -1).astype(np.int64)
    counts = np.bincount(
        (stage_major + np.arange(Q)[:, None] * codebook_size).ravel(), minlength=Q * codebook_size
    ).reshape(Q, codebook_size)
    p = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log2(p), 0.0)
    return terms.sum(axis=1)


def validate_frequency_tables(tables: Any, num_quantizers: int, codebook_size: int) -> np.ndarray:
    """Check (Q, K) positive integer tables; returns them as int64. Raises WireFormatError."""
    arr = np.asarray(tables)
    if arr.shape != (num_quantizers, codebook_size):
        raise WireFormatError(
            f"frequency tables must be (num_quantizers, codebook_size) = "
            f"({num_quantizers}, {codebook_size}), got {arr.shape}"
        )
    if arr.dtype.kind not in "iu":
        raise WireFormatError(f"frequency tables must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.min() < 1:
        raise WireFormatError("every frequency table entry must be >= 1 (add-one smoothing)")
    if int(arr.sum(axis=1).max()) > _MAX_TABLE_TOTAL:
        raise WireFormatError("frequency table totals exceed 2**62")
    return arr


def categorical(counts: np.ndarray) -> Any:
    """(K,) counts >= 1 -> the constriction model with probabilities counts / counts.sum()."""
    return constriction.stream.model.Categorical(counts / counts.sum(), perfect=False)


def encode_stage(symbols: np.ndarray, counts: np.ndarray) -> bytes:
    """Range-code one stage's (N,) symbols with its (K,) counts -> little-endian 32-bit words."""
    encoder = constriction.stream.queue.RangeEncoder()
    encoder.encode(np.ascontiguousarray(symbols, dtype=np.int32), categorical(counts))
    return encoder.get_compressed().astype("<u4").tobytes()


def decode_stage(stream: bytes, count: int, counts: np.ndarray) -> np.ndarray:
    """Inverse of ``encode_stage`` -> (count,) int64. Raises WireFormatError on invalid data."""
    words = np.frombuffer(stream, dtype="<u4").astype(np.uint32)
    try:
        decoder = constriction.stream.queue.RangeDecoder(words)
        symbols = decoder.decode(categorical(counts), count)
        exhausted = decoder.maybe_exhausted()
    except Exception as exc:  # constriction reports invalid data with AssertionError or ValueError
        raise WireFormatError(f"entropy-coded stream is invalid for the frequency table: {exc}") from exc
    if not exhausted:
        raise WireFormatError("entropy-coded stream has data left after its last symbol")
    return symbols.astype(np.int64)
