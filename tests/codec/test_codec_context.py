"""CONTEXT encoding: the context model, its tables, its streams and their validation."""

from __future__ import annotations

import json
import re
from pathlib import Path

import constriction
import numpy as np
import pytest
import torch

from revqom_nodes.codec.context import (
    NUM_CONTEXTS,
    CellRun,
    ContextTables,
    cell_bits,
    cell_symbols,
    decode_run,
    encode_run,
    joint_keys,
    measure_context_tables,
    neighbours,
    validate_context_tables,
)
from revqom_nodes.codec.entropy import categorical
from revqom_nodes.codec.errors import CodecStateError, WireFormatError
from revqom_nodes.codec.slices import cell_order, cut_slices
from revqom_nodes.codec.state import CodecState, compute_codebook_id
from revqom_nodes.codec.wire import Encoding, decode_cells, decode_payload, encode_cells, encode_payload

MODELS = Path(__file__).resolve().parents[2] / "models"


def busy_map(rng: np.random.Generator, Q: int, K: int, H: int, W: int) -> np.ndarray:
    """Like a BEV map: mostly one "empty" tuple, blobs of a few frequent tuples, rare noise."""
    common = rng.integers(0, K, (6, Q))
    indices = np.zeros((Q, H, W), dtype=np.int64)
    blob = rng.random((H, W)) < 0.25
    indices[:, blob] = common[rng.integers(0, len(common), blob.sum())].T
    noise = rng.random((H, W)) < 0.05
    indices[:, noise] = rng.integers(0, K, (Q, noise.sum()))
    return indices


def tables_for(Q: int, K: int, H: int = 12, W: int = 10, max_symbols: int = 8) -> ContextTables:
    rng = np.random.default_rng(1)
    return measure_context_tables([busy_map(rng, Q, K, H, W) for _ in range(4)], K, Q, max_symbols)


def roundtrip(indices: np.ndarray, K: int, tables: ContextTables, run: CellRun) -> tuple[bytes, Encoding]:
    payload, used = encode_cells(indices, K, Encoding.CONTEXT, context_tables=tables, run=run)
    decoded = decode_cells(
        payload,
        num_cells=indices.shape[1],
        num_quantizers=indices.shape[0],
        codebook_size=K,
        encoding=used,
        context_tables=tables,
        run=run,
    )
    np.testing.assert_array_equal(decoded, indices)
    return payload, used


@pytest.mark.parametrize(("Q", "K"), [(1, 2), (2, 5), (3, 64), (2, 1000)])
def test_real_looking_and_uniform_maps_round_trip(Q, K):
    rng = np.random.default_rng(Q * K)
    H, W = 12, 10
    tables = tables_for(Q, K, H, W)
    payload, used = roundtrip(busy_map(rng, Q, K, H, W).reshape(Q, -1), K, tables, CellRun(H, W))
    assert used is Encoding.CONTEXT and len(payload) % 4 == 0
    uniform = rng.integers(0, K, (Q, H * W))  # mostly escapes; PACKED when not smaller
    assert roundtrip(uniform, K, tables, CellRun(H, W))[1] in (Encoding.CONTEXT, Encoding.PACKED)


def test_every_symbol_and_escapes_round_trip():
    Q, K, H, W = 2, 5, 6, 7
    every = np.stack(np.unravel_index(np.arange(H * W) % K**Q, (K,) * Q)).astype(np.int64)  # all 25 tuples
    for max_symbols in (25, 3):  # an alphabet of every tuple seen; one of 3, the rest escaped
        tables = tables_for(Q, K, max_symbols=max_symbols)
        stream = encode_run(every, CellRun(H, W), tables)
        np.testing.assert_array_equal(decode_run(stream, H * W, CellRun(H, W), tables), every)
        roundtrip(every, K, tables, CellRun(H, W))  # CONTEXT, or PACKED when not smaller


@pytest.mark.parametrize("interleave", [1, 2, 3])
def test_single_cells_rows_and_any_run_decode_on_their_own(interleave):
    Q, K, H, W = 3, 16, 9, 8
    rng = np.random.default_rng(interleave)
    tables = tables_for(Q, K, H, W, max_symbols=6)
    flat = busy_map(rng, Q, K, H, W).reshape(Q, -1)[:, cell_order(H, W, interleave)]
    runs = [(0, 1), (5, 1), (H * W - 1, 1), (0, W), (W, W), (3, W + 2), (0, H * W), (17, 30)]
    for first, n in runs:
        run = CellRun(H, W, first, interleave)
        cells = flat[:, first : first + n]
        np.testing.assert_array_equal(decode_run(encode_run(cells, run, tables), n, run, tables), cells)


def test_neighbours_follow_the_cell_order_and_stop_at_the_run():
    up, left = neighbours(CellRun(3, 4), 12)
    assert up.tolist() == [-1] * 4 + list(range(8))
    assert left.tolist() == [-1, 0, 1, 2, -1, 4, 5, 6, -1, 8, 9, 10]
    up, left = neighbours(CellRun(3, 4, first_cell=5), 7)  # cells 5..11
    assert up.tolist() == [-1, -1, -1, -1, 0, 1, 2] and left.tolist() == [-1, 0, 1, -1, 3, 4, 5]
    # interleave 2 on 4 x 4: positions 0..3 are (0, 0), (0, 2), (2, 0), (2, 2)
    up, left = neighbours(CellRun(4, 4, interleave=2), 16)
    assert up[:4].tolist() == [-1, -1, 0, 1] and left[:4].tolist() == [-1, 0, -1, 2]
    for bad in (CellRun(3, 4, 10), CellRun(3, 4, 0, 4), CellRun(3, 4, -1)):
        with pytest.raises(WireFormatError, match="do not fit"):
            neighbours(bad, 3)


def test_measured_tables_count_every_cell_four_times():
    Q, K, H, W = 2, 5, 6, 7
    maps = [busy_map(np.random.default_rng(s), Q, K, H, W) for s in range(3)]
    tables = measure_context_tables(maps, K, Q, max_symbols=4)
    assert tables.alphabet.shape == (4, Q) and tables.counts.shape == (NUM_CONTEXTS, 5)
    assert tables.counts.sum() == NUM_CONTEXTS * 5 + 4 * 3 * H * W  # add-one, then 4 counts per cell
    keys, counts = np.unique(joint_keys(np.concatenate(maps, axis=1), K), return_counts=True)
    top = keys[np.lexsort((keys, -counts))[:4]]
    np.testing.assert_array_equal(joint_keys(tables.alphabet.T, K), top)
    escaped = ~np.isin(joint_keys(np.concatenate(maps, axis=1), K), top)
    assert tables.escape_counts.sum() == Q * (K + escaped.sum())
    with pytest.raises(ValueError, match="lie in"):
        measure_context_tables([np.full((Q, 2, 2), K)], K, Q)
    assert measure_context_tables([torch.zeros(1, Q, 2, 2, dtype=torch.long)], K, Q).alphabet.shape == (1, Q)


def test_cell_bits_are_what_the_coder_spends():
    Q, K, H, W = 3, 16, 30, 20
    tables = tables_for(Q, K, H, W, max_symbols=6)
    indices = busy_map(np.random.default_rng(9), Q, K, H, W).reshape(Q, -1)
    payload, used = encode_cells(indices, K, Encoding.CONTEXT, context_tables=tables, run=CellRun(H, W))
    assert used is Encoding.CONTEXT
    estimate = cell_bits(cell_symbols(indices, tables), CellRun(H, W), tables).sum() / 8
    assert estimate <= len(payload) <= estimate + 8


def corrupt_setup():
    Q, K, H, W = 2, 7, 12, 10
    tables = tables_for(Q, K, H, W)
    indices = busy_map(np.random.default_rng(4), Q, K, H, W)
    payload, used = encode_payload(indices, K, Encoding.CONTEXT, context_tables=tables)
    assert used is Encoding.CONTEXT and len(payload) >= 8
    fields = {"height": H, "width": W, "num_quantizers": Q, "codebook_size": K, "context_tables": tables}
    return indices, payload, fields


def test_corrupt_streams_raise_wire_format_errors():
    indices, payload, fields = corrupt_setup()
    np.testing.assert_array_equal(decode_payload(payload, encoding=2, **fields), indices)
    cases = [
        (payload[:-4], None),  # truncated: decodes wrong or fails; never anything but WireFormatError
        (payload + b"\x00\x00\x00\x00", "not the encoding|left|invalid"),
        (payload + b"\x01\x00\x00\x00", "not the encoding|left|invalid"),
        (payload + b"\x00", "multiple of 4"),
        (b"", "multiple of 4"),
    ]
    for bad, message in cases:
        try:
            decoded = decode_payload(bad, encoding=2, **fields)
        except WireFormatError as exc:
            assert message is None or re.search(message, str(exc))
        else:
            assert message is None and not np.array_equal(decoded, indices)
    rng = np.random.default_rng(0)
    for _ in range(200):
        noise = rng.integers(0, 256, 4 * int(rng.integers(1, len(payload) // 4)), dtype=np.uint8).tobytes()
        try:
            decoded = decode_payload(noise, encoding=2, **fields)
        except WireFormatError:
            continue
        assert decoded.shape == indices.shape and decoded.min() >= 0 and decoded.max() < 7
    with pytest.raises(WireFormatError, match="no context tables"):
        decode_payload(payload, encoding=2, **{**fields, "context_tables": None})
    with pytest.raises(WireFormatError, match="smaller than the PACKED"):
        decode_payload(b"\0" * 92, encoding=2, **fields)  # PACKED: 120 cells x 6 bits = 90 bytes


def test_an_escaped_tuple_of_the_alphabet_is_refused():
    Q, K, H, W = 2, 1000, 12, 10  # 20 bits per cell: two cells of PACKED are 5 bytes
    tables = tables_for(Q, K, H, W)
    encoder = constriction.stream.queue.RangeEncoder()
    code = lambda symbol, counts: encoder.encode(np.array([symbol], np.int32), categorical(counts))  # noqa: E731
    code(len(tables.alphabet), tables.counts[3 * 2 + 2])  # cell 0: ESCAPE, up and left unknown
    code(0, tables.counts[3 * 2 + 1])  # cell 1: up unknown, left "other"
    for q in range(Q):  # then the escaped cell's tuple: the alphabet's first
        code(tables.alphabet[0, q], tables.escape_counts[q])
    stream = encoder.get_compressed().astype("<u4").tobytes()
    with pytest.raises(WireFormatError, match="escapes a tuple that is in the alphabet"):
        decode_cells(stream, num_cells=2, num_quantizers=Q, codebook_size=K, encoding=2,
                     context_tables=tables, run=CellRun(H, W))


def test_bad_tables_raise():
    Q, K = 2, 5
    good = tables_for(Q, K)
    N = len(good.alphabet)
    cases = [
        ((good.alphabet[:, :1], good.counts, good.escape_counts), "alphabet must be"),
        ((np.zeros((0, Q), np.int64), good.counts[:, :1], good.escape_counts), "alphabet must be"),
        ((good.alphabet + K, good.counts, good.escape_counts), r"\[0, 5\)"),
        ((np.repeat(good.alphabet[:1], N, axis=0), good.counts, good.escape_counts), "twice"),
        ((good.alphabet, good.counts[:, :-1], good.escape_counts), "context counts must be"),
        ((good.alphabet, good.counts * 0, good.escape_counts), ">= 1"),
        ((good.alphabet, good.counts, good.escape_counts[:1]), "escape_counts must be"),
        ((good.alphabet, good.counts.astype(float), good.escape_counts), "integers"),
        ((good.alphabet, good.counts), "alphabet, counts, escape_counts"),
    ]
    for tables, message in cases:
        with pytest.raises(WireFormatError, match=message):
            validate_context_tables(tables, Q, K)
    with pytest.raises(WireFormatError, match="CellRun"):
        encode_cells(np.zeros((Q, 3), np.int64), K, Encoding.CONTEXT, context_tables=good)
    with pytest.raises(WireFormatError, match="context tables"):
        cut_slices(np.zeros((Q, 3, 3), np.int64), K, 0, Encoding.CONTEXT)


def test_state_ids_without_context_tables_are_unchanged_and_with_them_covered():
    state = CodecState.load(MODELS / "synthetic_k64.pt")  # a bundled file written before CONTEXT
    provenance = json.loads((MODELS / "synthetic_k64.provenance.json").read_text())
    assert state.context_tables is None and state.codebook_id == provenance["codebook_id"]
    assert "context_tables" not in state.to_dict()
    S = state.settings
    rng = np.random.default_rng(0)
    tables = measure_context_tables([rng.integers(0, S.codebook_size, (S.num_quantizers, 4, 4))],
                                    S.codebook_size, S.num_quantizers)
    with_context = state.with_context_tables(tables)
    assert with_context.codebook_id != state.codebook_id
    assert with_context.with_context_tables(None).codebook_id == state.codebook_id
    loaded = CodecState.from_dict(with_context.to_dict())
    assert loaded.codebook_id == with_context.codebook_id
    for part, expected in zip(loaded.context_tables, tables, strict=True):
        np.testing.assert_array_equal(part, expected)
    changed = tables._replace(counts=tables.counts + 1)
    assert compute_codebook_id(S, state.codebooks, state.entropy_tables, changed) != with_context.codebook_id
    data = with_context.to_dict()
    data["context_tables"]["counts"] = torch.zeros_like(data["context_tables"]["counts"])
    with pytest.raises(CodecStateError, match="context tables"):
        CodecState.from_dict(data)
    data = with_context.to_dict()
    data["context_tables"] = {"alphabet": data["context_tables"]["alphabet"]}
    with pytest.raises(CodecStateError, match="context_tables"):
        CodecState.from_dict(data)


@pytest.mark.parametrize(("H", "W", "interleave"), [(3, 4, 1), (5, 7, 2), (9, 8, 3), (4, 4, 4)])
def test_neighbours_are_the_up_and_left_cells_of_the_sub_grid(H, W, interleave):
    order = cell_order(H, W, interleave)
    position = np.empty(H * W, np.int64)
    position[order] = np.arange(H * W)  # row-major cell -> its place in the cell order
    rows, cols = np.divmod(order, W)
    up_cell = np.where(rows >= interleave, order - interleave * W, -1)
    left_cell = np.where(cols >= interleave, order - interleave, -1)
    rng = np.random.default_rng(H * W + interleave)
    for first in [0, 1, W, *rng.integers(0, H * W, 5).tolist()]:
        n = int(rng.integers(1, H * W - first + 1))
        got = neighbours(CellRun(H, W, first, interleave), n)
        for cell, g in zip((up_cell, left_cell), got, strict=True):
            at = np.where(cell >= 0, position[cell] - first, -1)[first : first + n]
            np.testing.assert_array_equal(g, np.maximum(at, -1))  # before the run: unknown


@pytest.mark.parametrize("interleave", [1, 2])
def test_random_runs_of_busy_and_noisy_maps_round_trip(interleave):
    Q, K, H, W = 3, 16, 14, 11
    rng = np.random.default_rng(interleave)
    tables = tables_for(Q, K, H, W, max_symbols=6)
    N = len(tables.alphabet)
    for noise in (0.0, 0.5, 1.0):  # real-looking, half escapes, uniform (mostly escapes)
        indices = busy_map(rng, Q, K, H, W)
        scatter = rng.random((H, W)) < noise
        indices[:, scatter] = rng.integers(0, K, (Q, scatter.sum()))
        flat = indices.reshape(Q, -1)[:, cell_order(H, W, interleave)]
        for _ in range(12):  # runs from any cell, mid-row starts included
            first = int(rng.integers(0, H * W))
            n = int(rng.integers(1, H * W - first + 1))
            run, cells = CellRun(H, W, first, interleave), flat[:, first : first + n]
            stream = encode_run(cells, run, tables)
            np.testing.assert_array_equal(decode_run(stream, n, run, tables), cells)
        assert noise == 0.0 or (cell_symbols(flat, tables).symbols == N).any()


def test_only_the_encoders_stream_of_the_cells_decodes():
    """Streams changed in their last words, extended or cut either fail or are exactly the
    encoding of what they decode to; some of them decode to the same cells and are refused only
    because they are not that encoding."""
    Q, K, H, W = 2, 7, 12, 10
    tables = tables_for(Q, K, H, W)
    rng = np.random.default_rng(3)
    refused_as_other_encoding = 0
    for _ in range(6):
        indices = busy_map(rng, Q, K, H, W).reshape(Q, -1)
        stream = encode_run(indices, CellRun(H, W), tables)
        words = np.frombuffer(stream, "<u4")
        variants = [stream + b"\0" * 4, stream + b"\0" * 8, stream + b"\x01\0\0\0", stream[:-4]]
        for at in (-1, -2):  # every single bit of the last two words
            for bit in range(32):
                changed = words.copy()
                changed[at] ^= np.uint32(1 << bit)
                variants.append(changed.tobytes())
        for bad in variants:
            try:
                decoded = decode_run(bad, H * W, CellRun(H, W), tables)
            except WireFormatError as exc:
                refused_as_other_encoding += "not the encoding" in str(exc)
                continue
            assert bad == encode_run(decoded, CellRun(H, W), tables)
            assert not np.array_equal(decoded, indices)
    assert refused_as_other_encoding > 0
