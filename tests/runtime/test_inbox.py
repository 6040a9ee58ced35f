"""Inbox: pairing by stamp within max_age, the sync wait, counters by reason, bounded memory."""

from __future__ import annotations

import math

import pytest

from revqom_nodes.defaults import node_defaults
from revqom_nodes.runtime.errors import RuntimeConfigError
from revqom_nodes.runtime.inbox import Inbox
from revqom_nodes.runtime.selection import NotFused
from revqom_nodes.runtime.validation import Expectations, Rejected, RejectReason

MS = 1_000_000


@pytest.fixture
def inbox(make_inbox):
    return make_inbox()


def reason_of(inbox, frame, topic_agent_id=None):
    try:
        inbox.receive(frame, topic_agent_id)
    except Rejected as rejected:
        return rejected.reason
    return None


def test_closest_partner_within_max_age_is_selected(inbox, make_frame):
    for stamp in (870, 970, 1070):
        assert reason_of(inbox, make_frame("infrastructure", stamp)) is None
    ego = make_frame("vehicle", 1000)
    inbox.receive(ego)
    (partner,) = inbox.partners_of(ego)
    assert partner.stamp_ns == 970 * MS  # 30 ms before beats 70 ms after
    far = make_frame("vehicle", 1300)
    inbox.receive(far)
    assert inbox.partners_of(far) == [NotFused.STALE]  # 230 ms from the newest partner: beyond max_age_ms


def test_an_agent_never_heard_from_has_no_message(inbox, make_frame):
    ego = make_frame("vehicle", 1000)
    inbox.receive(ego)
    assert inbox.partners_of(ego) == [NotFused.NO_MESSAGE]


def test_the_fusion_nodes_default_max_age_pairs_a_partner_400_ms_late(make_inbox, make_frame):
    inbox = make_inbox(max_age_ms=node_defaults("fusion")["fusion.max_age_ms"])
    assert reason_of(inbox, make_frame("infrastructure", 600)) is None
    ego = make_frame("vehicle", 1000)
    inbox.receive(ego)
    (partner,) = inbox.partners_of(ego)
    assert partner.age_ms(ego.stamp_ns) == 400.0
    late = make_inbox(max_age_ms=node_defaults("fusion")["fusion.max_age_ms"])  # nothing of the partner yet
    late.receive(ego)
    assert reason_of(late, make_frame("infrastructure", 1000 - 460)) is RejectReason.STALE


def test_ego_waits_for_a_partner_at_or_after_its_stamp(inbox, make_frame, clock):
    inbox.receive(make_frame("infrastructure", 930))
    inbox.receive(make_frame("vehicle", 1000))
    frame, wait_s = inbox.next_ego()
    assert frame is None and wait_s == pytest.approx(0.2)  # a closer partner may still come
    inbox.receive(make_frame("infrastructure", 1030))
    frame, _ = inbox.next_ego()
    assert frame.stamp_ns == 1000 * MS
    assert inbox.partners_of(frame)[0].stamp_ns == 1030 * MS
    assert inbox.next_ego() == (None, math.inf)


def test_sync_wait_times_out_and_the_silent_agent_goes_quiet(inbox, make_frame, clock):
    inbox.receive(make_frame("infrastructure", 900))
    inbox.receive(make_frame("vehicle", 1000))
    assert inbox.next_ego()[0] is None
    clock.now_ns += 201 * MS
    frame, _ = inbox.next_ego()
    assert frame is not None and inbox.partners_of(frame)[0].stamp_ns == 900 * MS
    inbox.receive(make_frame("vehicle", 1100))  # 900 is still within max_age: waited for again
    assert inbox.next_ego()[0] is None
    clock.now_ns += 201 * MS
    frame, _ = inbox.next_ego()  # nothing within max_age of 1100 when the wait ended: quiet
    assert frame.stamp_ns == 1100 * MS and inbox.partners_of(frame) == [NotFused.STALE]
    inbox.receive(make_frame("vehicle", 1200))
    frame, _ = inbox.next_ego()  # the quiet agent is not waited for again
    assert frame.stamp_ns == 1200 * MS and inbox.partners_of(frame) == [NotFused.STALE]
    inbox.receive(make_frame("infrastructure", 1220))  # back: waited for again
    inbox.receive(make_frame("vehicle", 1300))
    assert inbox.next_ego()[0] is None


def test_rejections_are_counted_by_reason(inbox, make_frame):
    inbox.receive(make_frame("vehicle", 1000))
    cases = [
        (make_frame("intruder", 1000), None, RejectReason.UNKNOWN_AGENT),
        (make_frame("infrastructure", 1000), "vehicle", RejectReason.UNKNOWN_AGENT),
        (make_frame("infrastructure", 800), None, RejectReason.STALE),
        (make_frame("vehicle", 1000), None, RejectReason.OUT_OF_ORDER),
        (make_frame("vehicle", 990), None, RejectReason.OUT_OF_ORDER),
        (make_frame("infrastructure", 1000, codebook_id="cd" * 32), None, RejectReason.CODEBOOK_MISMATCH),
    ]
    for frame, topic_agent, reason in cases:
        assert reason_of(inbox, frame, topic_agent) is reason
    counts = inbox.rejected_counts()
    assert set(counts) == {r.value for r in RejectReason}
    assert counts["unknown_agent"] == 2 and counts["out_of_order"] == 2
    assert counts["stale"] == counts["codebook_mismatch"] == 1
    assert counts["malformed_payload"] == 0
    assert inbox.bytes_received() == [len(make_frame().payload), 0]


def test_memory_is_bounded(inbox, make_frame):
    for i in range(50):
        inbox.receive(make_frame("infrastructure", 1000 + 10 * i))
        inbox.receive(make_frame("vehicle", 1000 + 10 * i))
        with pytest.raises(Rejected):
            inbox.receive(make_frame(f"stranger{i}", 1000))
    assert inbox.held_frames() == 6  # buffer_size per configured agent, strangers hold nothing
    assert inbox.ego_frames_dropped == 50 - 4  # max_pending ego frames wait at most
    assert inbox.rejected_counts()["unknown_agent"] == 50


def test_a_jump_back_in_time_restarts_the_buffers_once_three_sweeps_agree(inbox, make_frame):
    inbox.receive(make_frame("infrastructure", 5000))
    inbox.receive(make_frame("vehicle", 5000))
    for stamp in (1000, 1100):  # a replay starting over, or a forged stamp: one sweep clears nothing
        assert reason_of(inbox, make_frame("vehicle", stamp)) is RejectReason.OUT_OF_ORDER
        assert inbox.time_jumps == 0 and inbox.held_frames() == 2
    inbox.receive(make_frame("vehicle", 1200))  # the third consecutive sweep confirms the jump
    assert inbox.time_jumps == 1
    assert inbox.held_frames() == 1
    assert reason_of(inbox, make_frame("infrastructure", 1210)) is None


def test_a_sweep_in_order_forgets_an_unconfirmed_jump(inbox, make_frame):
    inbox.receive(make_frame("vehicle", 5000))
    for stamp in (1000, 1100, 5100, 1200, 1300):  # 5100, in order, breaks the run
        reason_of(inbox, make_frame("vehicle", stamp))
    assert inbox.time_jumps == 0 and inbox.held_frames() == 2
    assert reason_of(inbox, make_frame("vehicle", 1050)) is RejectReason.OUT_OF_ORDER  # not after 1300
    assert inbox.time_jumps == 0


def test_configuration_errors(tiny_model):
    expect = Expectations.of(tiny_model)
    with pytest.raises(RuntimeConfigError, match="ego agent"):
        Inbox(expect, agent_ids=["a"], ego_agent_id="b", max_age_ms=100)
    with pytest.raises(RuntimeConfigError, match="unique"):
        Inbox(expect, agent_ids=["a", "a"], ego_agent_id="a", max_age_ms=100)
    with pytest.raises(RuntimeConfigError):
        Inbox(expect, agent_ids=["a"], ego_agent_id="a", max_age_ms=0)


def test_a_partner_sweep_within_half_a_period_needs_no_wait(tiny_model, make_frame, clock):
    inbox = Inbox(
        Expectations.of(tiny_model),
        agent_ids=["vehicle", "infrastructure"],
        ego_agent_id="vehicle",
        max_age_ms=150,
        sync_wait_ms=200,
        sweep_period_ms=100,
        clock_ns=clock,
    )
    inbox.receive(make_frame("infrastructure", 960))
    inbox.receive(make_frame("vehicle", 1000))
    frame, _ = inbox.next_ego()  # 40 ms before: the next sweep (>= 1060) cannot be closer
    assert frame.stamp_ns == 1000 * MS
    inbox.receive(make_frame("infrastructure", 1040))
    inbox.receive(make_frame("vehicle", 1100))
    assert inbox.next_ego()[0] is None  # 60 ms before: a sweep at 1140 would be closer
