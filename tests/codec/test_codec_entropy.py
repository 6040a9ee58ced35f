"""ENTROPY wire format and frequency tables: exact round-trips, rate, fallback, hostile payloads."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from revqom_nodes.codec.entropy import empirical_entropy_bits, measure_frequency_tables
from revqom_nodes.codec.errors import WireFormatError
from revqom_nodes.codec.wire import Encoding, decode_payload, encode_payload, packed_size


def skewed_indices(rng: np.random.Generator, K: int, shape: tuple[int, ...], top: float) -> np.ndarray:
    probs = np.full(K, (1.0 - top) / (K - 1))
    probs[0] = top
    return rng.choice(K, size=shape, p=probs)


def decode(payload: bytes, encoding: Encoding, indices: np.ndarray, K: int, tables) -> np.ndarray:
    Q, H, W = indices.shape
    return decode_payload(
        payload,
        height=H,
        width=W,
        num_quantizers=Q,
        codebook_size=K,
        encoding=encoding,
        frequency_tables=tables,
    )


@settings(max_examples=40, deadline=None)
@given(
    K=st.integers(2, 4096),
    Q=st.integers(1, 4),
    H=st.integers(1, 24),
    W=st.integers(1, 24),
    top=st.floats(0.3, 0.99),
    seed=st.integers(0, 2**32 - 1),
)
def test_round_trip_is_exact(K: int, Q: int, H: int, W: int, top: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    tables = measure_frequency_tables([skewed_indices(rng, K, (Q, H, W), top)], K, Q)
    indices = skewed_indices(rng, K, (Q, H, W), top)
    payload, used = encode_payload(indices, K, Encoding.ENTROPY, tables)
    assert len(payload) <= packed_size(H, W, Q, K)
    np.testing.assert_array_equal(decode(payload, used, indices, K, tables), indices)


@pytest.mark.parametrize("K", [3, 5, 100, 4095])
def test_non_power_of_two_codebooks_use_entropy_coding(K: int) -> None:
    rng = np.random.default_rng(K)
    tables = measure_frequency_tables([skewed_indices(rng, K, (2, 32, 32), 0.9)], K, 2)
    indices = skewed_indices(rng, K, (2, 32, 32), 0.9)
    payload, used = encode_payload(indices, K, Encoding.ENTROPY, tables)
    assert used is Encoding.ENTROPY
    np.testing.assert_array_equal(decode(payload, used, indices, K, tables), indices)


def test_skewed_distribution_within_three_percent_of_entropy() -> None:
    rng = np.random.default_rng(0)
    K, shape = 64, (3, 128, 128)
    tables = measure_frequency_tables([skewed_indices(rng, K, shape, 0.92) for _ in range(2)], K, 3)
    indices = skewed_indices(rng, K, shape, 0.92)
    payload, used = encode_payload(indices, K, Encoding.ENTROPY, tables)
    assert used is Encoding.ENTROPY
    entropy_bits = empirical_entropy_bits(indices, K).sum() * 128 * 128
    assert len(payload) * 8 <= 1.03 * entropy_bits
    assert len(payload) < 0.2 * packed_size(128, 128, 3, K)


def test_uniform_indices_fall_back_to_packed() -> None:
    rng = np.random.default_rng(1)
    K, shape = 64, (3, 64, 64)
    tables = measure_frequency_tables([rng.integers(0, K, shape)], K, 3)
    indices = rng.integers(0, K, shape)
    payload, used = encode_payload(indices, K, Encoding.ENTROPY, tables)
    assert used is Encoding.PACKED
    assert payload == encode_payload(indices, K, Encoding.PACKED)[0]
    np.testing.assert_array_equal(decode(payload, used, indices, K, tables), indices)


def test_measure_frequency_tables_adds_one_and_accepts_tensors() -> None:
    maps = [np.array([[[0, 0], [1, 0]]]), torch.tensor([[[[2, 2], [2, 0]]]])]
    tables = measure_frequency_tables(maps, 4, 1)
    assert tables.dtype == np.int64
    np.testing.assert_array_equal(tables, [[1 + 4, 1 + 1, 1 + 3, 1]])
    with pytest.raises(ValueError):
        measure_frequency_tables([np.zeros((2, 2, 2), int)], 4, 1)
    with pytest.raises(ValueError):
        measure_frequency_tables([np.full((1, 2, 2), 4)], 4, 1)


def test_empirical_entropy() -> None:
    indices = np.array([[[0, 1], [2, 3]], [[0, 0], [0, 0]]])
    np.testing.assert_allclose(empirical_entropy_bits(indices, 4), [2.0, 0.0])


def entropy_case() -> tuple[np.ndarray, np.ndarray, bytes]:
    rng = np.random.default_rng(5)
    K, shape = 7, (2, 16, 16)
    tables = measure_frequency_tables([skewed_indices(rng, K, shape, 0.9)], K, 2)
    indices = skewed_indices(rng, K, shape, 0.9)
    payload, used = encode_payload(indices, K, Encoding.ENTROPY, tables)
    assert used is Encoding.ENTROPY
    return indices, tables, payload


def assert_raises_or_in_range(payload: bytes, indices: np.ndarray, tables: np.ndarray) -> None:
    try:
        decoded = decode(payload, Encoding.ENTROPY, indices, 7, tables)
    except WireFormatError:
        return
    assert decoded.shape == indices.shape and decoded.dtype == np.int64
    assert decoded.min() >= 0 and decoded.max() < 7


def test_truncated_and_extended_entropy_payloads_raise() -> None:
    indices, tables, payload = entropy_case()
    for cut in (1, 4, len(payload) - 3, len(payload)):
        with pytest.raises(WireFormatError):
            decode(payload[:-cut], Encoding.ENTROPY, indices, 7, tables)
    for extra in (b"\0", b"\0" * 4, b"\xff" * 8):
        with pytest.raises(WireFormatError):
            decode(payload + extra, Encoding.ENTROPY, indices, 7, tables)


def test_lying_entropy_header_raises() -> None:
    indices, tables, payload = entropy_case()
    lengths = np.frombuffer(payload[:8], "<u4")
    for fake in (
        [lengths[0] + 4, lengths[1] - 4],
        [lengths[0] + 1, lengths[1]],
        [2**32 - 4, 4],
        [0, lengths[0] + lengths[1]],
    ):
        lying = np.array(fake, dtype="<u4").tobytes() + payload[8:]
        assert_raises_or_in_range(lying, indices, tables)
    with pytest.raises(WireFormatError, match="stage lengths"):
        decode(np.array([2**32 - 4, 4], "<u4").tobytes() + payload[8:], Encoding.ENTROPY, indices, 7, tables)


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), flips=st.integers(1, 6))
def test_entropy_bit_flips_raise_or_decode_in_range(seed: int, flips: int) -> None:
    indices, tables, payload = entropy_case()
    damaged = bytearray(payload)
    for bit in np.random.default_rng(seed).integers(0, len(damaged) * 8, flips):
        damaged[bit // 8] ^= 1 << (bit % 8)
    assert_raises_or_in_range(bytes(damaged), indices, tables)


def test_entropy_needs_valid_tables() -> None:
    indices, tables, payload = entropy_case()
    with pytest.raises(WireFormatError, match="frequency tables"):
        encode_payload(indices, 7, Encoding.ENTROPY)
    with pytest.raises(WireFormatError, match="frequency tables"):
        decode(payload, Encoding.ENTROPY, indices, 7, None)
    with pytest.raises(WireFormatError, match="must be"):
        decode(payload, Encoding.ENTROPY, indices, 7, tables[:1])
    zeroed = tables.copy()
    zeroed[0, 0] = 0
    with pytest.raises(WireFormatError, match=">= 1"):
        decode(payload, Encoding.ENTROPY, indices, 7, zeroed)
    with pytest.raises(WireFormatError, match="integers"):
        decode(payload, Encoding.ENTROPY, indices, 7, tables.astype(float))


def test_entropy_payload_not_smaller_than_packed_is_rejected() -> None:
    indices = np.zeros((1, 2, 2), dtype=int)
    tables = np.ones((1, 2), dtype=int)
    with pytest.raises(WireFormatError, match="smaller than the PACKED size"):
        decode_payload(
            b"\0" * 8,
            height=2,
            width=2,
            num_quantizers=1,
            codebook_size=2,
            encoding=1,
            frequency_tables=tables,
        )
    assert encode_payload(indices, 2, Encoding.ENTROPY, tables)[1] is Encoding.PACKED
