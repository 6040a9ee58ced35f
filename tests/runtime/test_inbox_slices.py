"""Inbox with sliced frames: assembly, waiting for missing slices, bad slices, the fused result."""

from __future__ import annotations

import itertools
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from revqom_nodes.codec.conceal import concealed_valid
from revqom_nodes.codec.slices import cell_order
from revqom_nodes.codec.wire import Encoding
from revqom_nodes.runtime import validation
from revqom_nodes.runtime.fusion import FusionEngine
from revqom_nodes.runtime.selection import NotFused
from revqom_nodes.runtime.validation import Expectations, RejectReason, check_frame
from tests.runtime.test_fusion_engine import T_WORLD_FROM_INFRA, T_WORLD_FROM_VEHICLE
from tests.runtime.test_inbox import MS, reason_of

SLICE_BYTES = 24  # 24 cells of the tiny model's 8 bits per cell, 43 PACKED slices


@pytest.fixture
def inbox(make_inbox):
    return make_inbox(sweep_period_ms=100)


def received_mask(slices, shape, interleave=1) -> np.ndarray:
    order = cell_order(*shape, interleave)
    mask = np.zeros(shape[0] * shape[1], dtype=bool)
    for frame in slices:
        mask[order[frame.first_cell : frame.first_cell + frame.num_cells]] = True
    return mask.reshape(shape)


@pytest.mark.parametrize("encoding", list(Encoding))
def test_complete_sliced_frames_are_fused_at_once_and_equal_whole_maps(
    tiny_model, inbox, make_slices, make_frame, encoding, monkeypatch
):
    ego_slices = make_slices("vehicle", 1000, T_WORLD_FROM_VEHICLE, encoding, SLICE_BYTES)
    infra_slices = make_slices("infrastructure", 1010, T_WORLD_FROM_INFRA, encoding, SLICE_BYTES)
    # the tiny model's infrastructure map is one tuple everywhere: CONTEXT (what "entropy" codes with
    # here) fits it in one slice of 8 bytes
    assert len(ego_slices) > 1 and (len(infra_slices) > 1 or encoding is not Encoding.PACKED)
    ticks = itertools.count()  # a slice's decoding: two readings of this clock, 1 ms apart
    monkeypatch.setattr(validation, "time", SimpleNamespace(perf_counter=lambda: next(ticks) * 1e-3))
    for frame in infra_slices[::-1] + ego_slices:  # any order within a frame
        inbox.receive(frame)
    monkeypatch.undo()
    ego, wait_s = inbox.next_ego()
    assert ego is not None and wait_s == 0.0
    (partner,) = inbox.partners_of(ego)
    assert ego.valid is None and partner.valid is None and partner.cells_received_fraction == 1.0

    expect = Expectations.of(tiny_model)
    whole = [
        check_frame(make_frame("vehicle", 1000, T_WORLD_FROM_VEHICLE, encoding), expect),
        check_frame(make_frame("infrastructure", 1010, T_WORLD_FROM_INFRA, encoding), expect),
    ]
    np.testing.assert_array_equal(ego.indices, whole[0].indices)
    np.testing.assert_array_equal(partner.indices, whole[1].indices)
    engine = FusionEngine(tiny_model)
    sliced = engine.fuse(ego, [partner]).detections
    reference = engine.fuse(whole[0], [whole[1]]).detections
    np.testing.assert_allclose(sliced.boxes, reference.boxes, atol=1e-5)
    np.testing.assert_allclose(sliced.scores, reference.scores, atol=1e-6)
    payload = sum(len(f.payload) for f in ego_slices + infra_slices)
    assert sum(inbox.bytes_received()) == payload  # every slice's payload counts
    assert ego.payload_bytes + partner.payload_bytes == payload  # each map: its frame's slices together
    assert ego.decode_ms == pytest.approx(len(ego_slices))  # every slice's decoding, summed


@pytest.mark.parametrize("interleave", [1, 2])
def test_a_partner_missing_slices_is_fused_after_the_wait_with_its_validity(
    tiny_model, inbox, make_slices, clock, interleave
):
    infra = make_slices("infrastructure", 1010, slice_bytes=SLICE_BYTES, interleave=interleave)
    kept = [f for i, f in enumerate(infra) if i not in (10, 11, 12)]  # 72 cells: 2.25 rows
    for frame in kept:
        inbox.receive(frame)
    inbox.receive(make_slices("vehicle", 1000)[0])
    frame, wait_s = inbox.next_ego()
    assert frame is None and wait_s == pytest.approx(0.2)  # the missing slices may still come
    clock.now_ns += 201 * MS
    ego, _ = inbox.next_ego()
    (partner,) = inbox.partners_of(ego)
    shape = tiny_model.grid.bev_shape
    expected = received_mask(kept, shape, interleave)
    np.testing.assert_array_equal(partner.valid, expected)
    assert partner.cells_received_fraction == pytest.approx(expected.mean())
    whole = make_slices("infrastructure", 1010)[0]
    indices = check_frame(whole, Expectations.of(tiny_model)).indices
    np.testing.assert_array_equal(partner.indices[:, expected], indices[:, expected])
    assert (partner.indices[:, ~expected] == 0).all()
    # row-major, that is a band the receiver cannot conceal whole; interleaved,
    # every lost cell has received neighbours and the partner's map is fused whole
    concealed = concealed_valid(torch.from_numpy(expected)[None])[0]
    assert bool(concealed.all()) == (interleave == 2)
    assert FusionEngine(tiny_model).fuse(ego, [partner]).fused_agent_ids == ["vehicle", "infrastructure"]


def test_the_next_sweep_settles_a_frame_with_lost_slices(inbox, make_slices):
    infra = make_slices("infrastructure", 960, slice_bytes=SLICE_BYTES)
    for frame in infra[:-1]:
        inbox.receive(frame)
    inbox.receive(make_slices("vehicle", 1000)[0])
    assert inbox.next_ego()[0] is None  # 40 ms before: final in time, but its last slice may come
    inbox.receive(make_slices("infrastructure", 1060, slice_bytes=SLICE_BYTES)[0])
    ego, wait_s = inbox.next_ego()  # slices come back to back: the 960 frame's last one is lost
    assert ego is not None and wait_s == 0.0
    (partner,) = inbox.partners_of(ego)
    assert partner.stamp_ns == 960 * MS and 0.9 < partner.cells_received_fraction < 1.0


def test_the_ego_waits_for_its_own_slices(inbox, make_slices, clock):
    ego_slices = make_slices("vehicle", 1000, slice_bytes=SLICE_BYTES)
    inbox.receive(make_slices("infrastructure", 1000)[0])
    for frame in ego_slices[:-1]:
        inbox.receive(frame)
    assert inbox.next_ego()[0] is None
    inbox.receive(ego_slices[-1])
    ego, _ = inbox.next_ego()
    assert ego.valid is None
    for frame in make_slices("vehicle", 1100, slice_bytes=SLICE_BYTES)[1:]:  # its first slice is lost
        inbox.receive(frame)
    inbox.receive(make_slices("infrastructure", 1100)[0])
    assert inbox.next_ego()[0] is None
    clock.now_ns += 201 * MS
    ego, _ = inbox.next_ego()
    assert ego.stamp_ns == 1100 * MS and not ego.valid[0, 0] and ego.valid[-1, -1]


def test_bad_slices_are_rejected_and_counted(inbox, make_slices):
    infra = make_slices("infrastructure", 1000, slice_bytes=SLICE_BYTES)
    inbox.receive(infra[0])
    tilted = make_slices("infrastructure", 1000, T_WORLD_FROM_INFRA, slice_bytes=SLICE_BYTES)
    other_count = make_slices("infrastructure", 1000, slice_bytes=SLICE_BYTES, num_slices=len(infra) + 1)
    shifted = make_slices("infrastructure", 1000, slice_bytes=SLICE_BYTES, first_cell=infra[0].num_cells - 1)
    reordered = make_slices("infrastructure", 1000, slice_bytes=SLICE_BYTES, interleave=2)
    cases = [
        (infra[0], RejectReason.OUT_OF_ORDER),  # a duplicate
        (tilted[1], RejectReason.BAD_SLICE),  # another pose than the first slice's
        (other_count[1], RejectReason.BAD_SLICE),  # num_slices unlike the first slice's
        (shifted[2], RejectReason.BAD_SLICE),  # overlaps slice 0's cells
        (shifted[-1], RejectReason.BAD_SLICE),  # runs past the map's last cell
        (reordered[1], RejectReason.BAD_SLICE),  # interleave unlike the first slice's
    ]
    for frame, reason in cases:
        assert reason_of(inbox, frame) is reason
    assert reason_of(inbox, infra[1]) is None  # the frame is not spoiled by them
    counts = inbox.rejected_counts()
    assert counts["bad_slice"] == 5 and counts["out_of_order"] == 1
    assert inbox.bytes_received()[1] == len(infra[0].payload) + len(infra[1].payload)


def test_memory_is_bounded_with_slices(inbox, make_slices):
    for i in range(20):
        for frame in make_slices("infrastructure", 1000 + 10 * i, slice_bytes=SLICE_BYTES)[::2]:
            inbox.receive(frame)
    assert inbox.held_frames() == 3  # buffer_size frames, whatever their slices


def test_a_partner_without_any_cell_fuses_like_no_partner(tiny_model, make_frame):
    expect = Expectations.of(tiny_model)
    ego = check_frame(make_frame("vehicle", 1000, T_WORLD_FROM_VEHICLE), expect)
    partner = check_frame(make_frame("infrastructure", 1010, T_WORLD_FROM_INFRA), expect)
    engine = FusionEngine(tiny_model)
    empty = engine.fuse(ego, [replace(partner, valid=np.zeros(tiny_model.grid.bev_shape, dtype=bool))])
    alone = engine.fuse(ego, [NotFused.NO_MESSAGE])
    assert empty.fused_agent_ids == ["vehicle", "infrastructure"]
    np.testing.assert_allclose(empty.detections.boxes, alone.detections.boxes, atol=1e-4)
    np.testing.assert_allclose(empty.detections.scores, alone.detections.scores, atol=1e-5)
    full = engine.fuse(ego, [partner]).detections  # the partner's cells do change the result
    scores = alone.detections.scores
    assert full.scores.shape != scores.shape or not np.allclose(full.scores, scores, atol=1e-5)
