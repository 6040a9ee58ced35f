"""Every kind of bad EncodedBEV content is rejected with its own reason; good frames decode exactly."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from revqom_nodes.codec.wire import Encoding
from revqom_nodes.runtime.encoder import AgentEncoder
from revqom_nodes.runtime.validation import (
    Expectations,
    Rejected,
    RejectReason,
    check_frame,
    check_slice,
    is_rigid,
)


@pytest.mark.parametrize("encoding", list(Encoding))
def test_good_frame_decodes_to_the_sent_indices(tiny_model, sweeps, make_frame, encoding):
    encoder = AgentEncoder(tiny_model, encoding)  # ENTROPY codes with CONTEXT: the model has its tables
    sent = encoder.encode(sweeps["vehicle"]).indices
    frame = make_frame(encode_with=encoding)
    assert frame.encoding == int(encoder.encoding)
    received = check_frame(frame, Expectations.of(tiny_model))
    np.testing.assert_array_equal(received.indices, sent)
    assert received.valid is None and received.decode_ms > 0 and received.payload_bytes == len(frame.payload)




@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"codebook_id": "ab" * 32}, RejectReason.CODEBOOK_MISMATCH),
        ({"codebook_id": "not-a-hash"}, RejectReason.CODEBOOK_MISMATCH),
        ({"codebook_size": 64}, RejectReason.CODEC_MISMATCH),
        ({"num_quantizers": 3}, RejectReason.CODEC_MISMATCH),
        ({"height": 65535, "width": 65535}, RejectReason.GRID_MISMATCH),
        ({"width": 16}, RejectReason.GRID_MISMATCH),
        ({"cell_size_m": 0.4}, RejectReason.GRID_MISMATCH),
        ({"cell_size_m": float("nan")}, RejectReason.GRID_MISMATCH),
        ({"encoding": 7}, RejectReason.UNKNOWN_ENCODING),
        ({"position": (math.nan, 0.0, 0.0)}, RejectReason.BAD_POSE),
        ({"orientation": (0.0, 0.0, 0.0, 0.0)}, RejectReason.BAD_POSE),
        ({"orientation": (0.0, 0.0, math.inf, 1.0)}, RejectReason.BAD_POSE),
        ({"payload": b"\x00" * 10}, RejectReason.MALFORMED_PAYLOAD),
        ({"payload": b""}, RejectReason.MALFORMED_PAYLOAD),
        ({"payload": b"\xff" * 1024, "encoding": 1}, RejectReason.MALFORMED_PAYLOAD),
        ({"num_slices": 0}, RejectReason.BAD_SLICE),
        ({"slice_index": 1}, RejectReason.BAD_SLICE),
        ({"first_cell": 1}, RejectReason.BAD_SLICE),
        ({"num_cells": 0}, RejectReason.BAD_SLICE),
        ({"num_cells": 2**32 - 1}, RejectReason.BAD_SLICE),
        ({"num_slices": 2, "num_cells": 512}, RejectReason.MALFORMED_PAYLOAD),  # payload of 1024 cells
    ],
)
def test_each_defect_has_its_reason(tiny_model, make_frame, overrides, reason):
    with pytest.raises(Rejected) as caught:
        check_frame(make_frame(**overrides), Expectations.of(tiny_model))
    assert caught.value.reason is reason
    assert caught.value.detail


def test_truncated_payload_is_malformed(tiny_model, make_frame):
    frame = make_frame()
    with pytest.raises(Rejected) as caught:
        check_frame(replace(frame, payload=frame.payload[:-1]), Expectations.of(tiny_model))
    assert caught.value.reason is RejectReason.MALFORMED_PAYLOAD


def test_is_rigid():
    T = np.eye(4)
    T[:3, 3] = (2800.0, -1200.0, 5.0)
    assert is_rigid(T)
    assert not is_rigid(np.diag([2.0, 1.0, 1.0, 1.0]))
    assert not is_rigid(np.eye(3))
    assert not is_rigid(np.diag([-1.0, 1.0, 1.0, 1.0]))  # a reflection: det -1
    noisy = T.copy()
    noisy[:3, :3] += 1e-5  # float noise of a pose sent as a quaternion: within tolerance
    noisy[3, 3] += 1e-12
    assert is_rigid(noisy)
    skewed = T.copy()
    skewed[0, 1] = 3e-3  # R R^T off by 3e-3
    assert not is_rigid(skewed)
    for bad in (np.nan, np.inf):
        broken = T.copy()
        broken[1, 3] = bad
        assert not is_rigid(broken)
    lifted = T.copy()
    lifted[3, 0] = 1e-3  # not an affine transform
    assert not is_rigid(lifted)


@pytest.mark.parametrize("encoding", list(Encoding))
def test_each_slice_decodes_on_its_own(tiny_model, sweeps, make_slices, encoding):
    sent = AgentEncoder(tiny_model, encoding).encode(sweeps["vehicle"]).indices
    Q, H, W = sent.shape
    flat = sent.reshape(Q, H * W)
    slices = make_slices(encode_with=encoding, slice_bytes=24)
    assert len(slices) > 1
    expect = Expectations.of(tiny_model)
    for frame in slices[::-1]:
        cells = check_slice(frame, expect).cells
        np.testing.assert_array_equal(cells, flat[:, frame.first_cell : frame.first_cell + frame.num_cells])
    with pytest.raises(Rejected) as caught:
        check_frame(slices[1], expect)  # one slice of several is not a whole map
    assert caught.value.reason is RejectReason.BAD_SLICE
