"""Bandwidth accounting: raw and late sizes, and the per-frame summary against the codec's packed size."""

import math

import pytest

from revqom_nodes.evaluation.bandwidth import BYTES_PER_BOX, late_bytes, raw_bytes, summarize
from revqom_nodes.evaluation.errors import EvaluationError


def test_raw_and_late_bytes():
    assert raw_bytes(256, 128, 128) == 16_777_216  # the paper's 16.78 MB
    assert late_bytes(15) == 15 * BYTES_PER_BOX == 480
    assert late_bytes(0) == 0


def test_summarize():
    summary = summarize([100, 300], cells=64)
    assert summary.mean_bytes == 200 and summary.max_bytes == 300
    assert summary.bits_per_cell == pytest.approx(25.0)
    assert math.isnan(summarize([32], cells=None).bits_per_cell)
    with pytest.raises(EvaluationError):
        summarize([], cells=4)


def test_packed_payload_summarizes_to_its_bit_rate():
    wire = pytest.importorskip("revqom_nodes.codec.wire")
    size = wire.packed_size(128, 128, 3, 64)
    assert size == 36_864  # the paper's 18 bpp payload
    assert summarize([size] * 3, cells=128 * 128).bits_per_cell == pytest.approx(18.0)
    raw = summarize([raw_bytes(256, 128, 128)], cells=128 * 128).bits_per_cell
    assert raw == pytest.approx(8192.0)  # C = 256 float32 per cell
