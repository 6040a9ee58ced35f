"""Reception rules with real signed slices: each reason produced and counted, replays, stamp
attacks that clear nothing, permissive against enforce, and the sender's signing."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from revqom_nodes.runtime.errors import RuntimeConfigError
from revqom_nodes.runtime.frames import signed_fields
from revqom_nodes.runtime.fusion import FusionEngine
from revqom_nodes.runtime.security import (
    SecurityMode,
    SliceGuard,
    load_signer,
    parse_security_mode,
    sign_slice,
)
from revqom_nodes.runtime.validation import Rejected, RejectReason
from revqom_nodes.trust import Authenticator, Verifier, load_trust_store
from revqom_nodes.trust.keydir import KeyDirectory, revoke
from tests.runtime.test_inbox import reason_of
from tests.trust.conftest import STAMP_SEC, make_keys

MS = 1_000_000
T0 = STAMP_SEC * 1_000_000_000  # July 2021: inside the certificates' validity


class RosClock:
    """The receiver's ROS clock, set by hand."""

    def __init__(self) -> None:
        self.now_ns = T0

    def __call__(self) -> int:
        return self.now_ns


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_keys(tmp_path_factory.mktemp("keys") / "keys").root


@pytest.fixture(scope="module")
def signers(keys: Path) -> dict:
    return {a: load_signer(keys, agent_id=a, role=r) for a, r in (("vehicle", 0), ("infrastructure", 1))}


@pytest.fixture
def ros_clock() -> RosClock:
    return RosClock()


@pytest.fixture
def secure_inbox(make_inbox, keys, ros_clock):
    def make(mode: SecurityMode = SecurityMode.ENFORCE, trust_dir: Path | None = None, **overrides):
        guard = SliceGuard.load(trust_dir or keys, mode=mode, max_clock_skew_ms=500, clock_ns=ros_clock)
        return make_inbox(guard=guard, **overrides)

    return make


@pytest.fixture
def signed(make_slices, signers):
    """``signed(agent_id, k, **overrides)``: the slices of sweep k (stamp T0 + 100k ms, sequence
    k) signed by the agent's key after ``overrides`` are applied."""

    def make(agent_id: str = "vehicle", k: int = 0, slice_bytes: int = 0, **overrides):
        fields = {"stamp_ns": T0 + k * 100 * MS, "sequence": k % 2**32, **overrides}
        messages = make_slices(agent_id, 0.0, slice_bytes=slice_bytes, **fields)
        return [sign_slice(m, signers[agent_id]) for m in messages]

    return make


def test_signed_slices_are_accepted_and_carry_a_verifiable_authenticator(secure_inbox, signed, keys):
    inbox = secure_inbox()
    (ego,) = signed("vehicle", 0)
    assert ego.signer_digest != bytes(8)
    verdict = Verifier(load_trust_store(keys)).verify(
        signed_fields(ego), Authenticator(ego.signer_digest, ego.signature)
    )
    assert verdict.accepted and verdict.signer.agent_id == "vehicle"
    for message in [*signed("infrastructure", 0, slice_bytes=40), ego]:
        assert reason_of(inbox, message) is None
    assert not any(inbox.rejected_counts().values())
    frame, _ = inbox.next_ego()
    assert frame.stamp_ns == T0 and inbox.partners_of(frame)[0].valid is None  # every slice arrived


def _other_ca_slice(tmp_path, make_slices):
    other = make_keys(tmp_path / "other").root
    (message,) = make_slices("infrastructure", 0.0, stamp_ns=T0, sequence=0)
    return sign_slice(message, load_signer(other, agent_id="infrastructure", role=1))


def test_every_reason_is_produced_and_counted(secure_inbox, signed, make_slices, ros_clock, tmp_path):
    inbox = secure_inbox()
    (good,) = signed("infrastructure", 0)
    flipped = bytearray(good.payload)
    flipped[3] ^= 0x10
    signature = bytearray(good.signature)
    signature[40] ^= 0x01
    cases = [
        (replace(good, signer_digest=bytes(8), signature=bytes(64)), RejectReason.UNSIGNED),
        (replace(good, payload=bytes(flipped)), RejectReason.BAD_SIGNATURE),  # one bit of the payload
        (replace(good, signature=bytes(signature)), RejectReason.BAD_SIGNATURE),  # one bit of the signature
        (replace(good, sequence=7), RejectReason.BAD_SIGNATURE),  # a signed field changed
        (_other_ca_slice(tmp_path, make_slices), RejectReason.UNKNOWN_SIGNER),
        (replace(good, role=0), RejectReason.ROLE_MISMATCH),  # the certificate says infrastructure
        (signed("vehicle", 0)[0], RejectReason.UNKNOWN_AGENT),  # the vehicle on the infrastructure topic
        (signed("infrastructure", -10**9)[0], RejectReason.EXPIRED),  # stamped 2018: before the certificate
        (signed("infrastructure", 6)[0], RejectReason.CLOCK_SKEW),  # 600 ms ahead of the receiver
        (signed("infrastructure", -6)[0], RejectReason.CLOCK_SKEW),  # 600 ms behind
    ]
    for message, reason in cases:
        assert reason_of(inbox, message, "infrastructure") is reason, reason
    assert reason_of(inbox, good, "infrastructure") is None
    assert reason_of(inbox, good, "infrastructure") is RejectReason.REPLAYED  # the same slice again
    counts = inbox.rejected_counts()
    assert counts["bad_signature"] == 3 and counts["clock_skew"] == 2 and counts["replayed"] == 1
    for reason in ("unsigned", "unknown_signer", "role_mismatch", "unknown_agent", "expired"):
        assert counts[reason] == 1, reason
    assert inbox.bytes_received() == [0, len(good.payload)]


def test_a_revoked_signer_is_rejected(tmp_path, make_slices, make_inbox, ros_clock):
    root = make_keys(tmp_path / "keys").root
    signer = load_signer(root, agent_id="infrastructure", role=1)
    revoke(KeyDirectory(root), agent_id="infrastructure")
    guard = SliceGuard.load(root, mode=SecurityMode.ENFORCE, max_clock_skew_ms=500, clock_ns=ros_clock)
    inbox = make_inbox(guard=guard)
    (message,) = make_slices("infrastructure", 0.0, stamp_ns=T0, sequence=0)
    assert reason_of(inbox, sign_slice(message, signer)) is RejectReason.REVOKED
    assert inbox.rejected_counts()["revoked"] == 1


def test_replays_are_recognised_by_signed_content(secure_inbox, signed, signers):
    inbox = secure_inbox()
    first, second = signed("infrastructure", 1, slice_bytes=40)[:2]
    assert reason_of(inbox, first) is None
    again = sign_slice(replace(first, signer_digest=bytes(8), signature=bytes(64)), signers["infrastructure"])
    assert again.signature != first.signature  # ECDSA is randomized: the bytes differ, the content not
    assert reason_of(inbox, again) is RejectReason.REPLAYED
    assert reason_of(inbox, second) is None
    assert reason_of(inbox, signed("infrastructure", 2)[0]) is None
    assert reason_of(inbox, signed("infrastructure", 0)[0]) is RejectReason.REPLAYED  # an older sweep
    same_stamp = signed("infrastructure", 2, sequence=99)[0]  # the stamp of a held sweep, another sequence
    assert reason_of(inbox, same_stamp) is RejectReason.REPLAYED
    assert inbox.rejected_counts()["replayed"] == 3


def test_stamp_attacks_without_a_key_cost_no_legit_frame(secure_inbox, signed, make_slices, ros_clock):
    inbox = secure_inbox()
    for k in range(3):
        ros_clock.now_ns = T0 + k * 100 * MS
        for message in (*signed("infrastructure", k), *signed("vehicle", k)):
            assert reason_of(inbox, message) is None
        forged = [
            make_slices("vehicle", 0.0, stamp_ns=T0 + k * 100 * MS + 950 * MS, sequence=k)[0],  # +0.95 s
            make_slices("vehicle", 0.0, stamp_ns=T0 - 2000 * MS, sequence=k)[0],  # 2 s back: a "restart"
            make_slices("vehicle", 0.0, stamp_ns=T0 + (k + 1) * 100 * MS, sequence=50)[0],  # the next stamp
        ]
        for message in forged:
            assert reason_of(inbox, message) is RejectReason.UNSIGNED
        held = inbox.held_frames()
        assert held == min(k + 1, 3) * 2 and inbox.time_jumps == 0
    fused = []
    while (frame := inbox.next_ego()[0]) is not None:
        fused.append((frame.stamp_ns, inbox.partners_of(frame)[0].stamp_ns))
    assert fused == [(T0 + k * 100 * MS,) * 2 for k in range(3)]
    assert inbox.rejected_counts()["unsigned"] == 9


def test_permissive_counts_but_fuses_and_off_checks_nothing(secure_inbox, signed, make_slices):
    unsigned = make_slices("infrastructure", 0.0, stamp_ns=T0, sequence=0)[0]
    permissive = secure_inbox(SecurityMode.PERMISSIVE)
    assert reason_of(permissive, unsigned) is None
    assert permissive.rejected_counts()["unsigned"] == 1 and permissive.held_frames() == 1
    assert reason_of(permissive, signed("infrastructure", 0)[0]) is RejectReason.OUT_OF_ORDER  # today's rules
    off = secure_inbox(SecurityMode.OFF)
    assert off.guard is None and reason_of(off, unsigned) is None
    assert not any(off.rejected_counts().values())


def test_the_clock_check_waits_for_a_clock(secure_inbox, signed, ros_clock):
    ros_clock.now_ns = 0  # use_sim_time before the first /clock
    assert reason_of(secure_inbox(), signed("infrastructure", 40)[0]) is None


def test_modes_and_signers_are_configured_clearly(keys):
    assert parse_security_mode("auto", "") is SecurityMode.OFF
    assert parse_security_mode("auto", str(keys)) is SecurityMode.ENFORCE
    assert parse_security_mode(" Permissive ", str(keys)) is SecurityMode.PERMISSIVE
    with pytest.raises(RuntimeConfigError, match=r"needs security\.trust_dir"):
        parse_security_mode("enforce", "")
    with pytest.raises(RuntimeConfigError, match="unknown security mode"):
        parse_security_mode("strict", str(keys))
    with pytest.raises(RuntimeConfigError, match="not for role"):
        load_signer(keys, agent_id="vehicle", role=1)
    with pytest.raises(RuntimeConfigError, match="trust_dir"):
        load_signer(keys / "missing", agent_id="vehicle", role=0)
    with pytest.raises(RuntimeConfigError, match="max_clock_skew_ms"):
        SliceGuard.load(keys, mode=SecurityMode.ENFORCE, max_clock_skew_ms=0, clock_ns=lambda: 0)


def test_partners_beyond_the_comm_range_are_counted(tiny_model, make_frame, make_inbox):
    from revqom_nodes.runtime.validation import Expectations, check_frame

    expect = Expectations.of(tiny_model)
    far = np.eye(4)
    far[0, 3] = 1e6
    ego = check_frame(make_frame("vehicle", 1000), expect)
    partner = check_frame(make_frame("infrastructure", 1000, T=far), expect)
    result = FusionEngine(tiny_model).fuse(ego, [partner])
    assert result.out_of_range == 1 and result.fused_agent_ids == ["vehicle"]
    inbox = make_inbox()
    inbox.count(RejectReason.OUT_OF_RANGE, result.out_of_range)
    assert inbox.rejected_counts()["out_of_range"] == 1


def test_screen_rejects_replays_without_verifying(secure_inbox, signed, monkeypatch) -> None:
    """A slice already placed, a forged copy of it, an older sweep and a stale partner sweep
    are refused from the per-agent state alone: no signature verification, no decoding."""
    inbox = secure_inbox()
    slices = signed("infrastructure", 0, slice_bytes=40)
    assert len(slices) > 2
    first = inbox.screen(slices[0], "infrastructure")
    assert inbox.held_frames() == 0  # screening changes no state
    inbox.accept(first)
    (ego,) = signed("vehicle", 3)  # 300 ms later: older infrastructure sweeps are stale now
    inbox.receive(ego, "vehicle")
    (older_ego,) = signed("vehicle", 2)

    def no_verification(*args: object) -> None:
        raise AssertionError("verified a slice that screening should have refused")

    monkeypatch.setattr(inbox.guard, "verify", no_verification)
    forged = replace(slices[0], signature=bytes(64))
    cases = [
        (slices[0], RejectReason.REPLAYED),
        (forged, RejectReason.REPLAYED),
        (ego, RejectReason.REPLAYED),
        (older_ego, RejectReason.REPLAYED),
        (signed("infrastructure", 1)[0], RejectReason.STALE),
    ]
    for message, reason in cases:
        with pytest.raises(Rejected) as rejected:
            inbox.screen(message, message.agent_id)
        assert rejected.value.reason is reason
    counts = inbox.rejected_counts()
    assert counts["replayed"] == 4 and counts["stale"] == 1 and counts["bad_signature"] == 0


def test_screened_slices_of_a_held_sweep_pass_and_are_verified_on_accept(secure_inbox, signed) -> None:
    inbox = secure_inbox()
    slices = signed("infrastructure", 0, slice_bytes=40)
    inbox.receive(slices[0], "infrastructure")
    screened = inbox.screen(slices[1], "infrastructure")
    assert screened.sender == ("infrastructure", screened.signer.digest) and screened.sweep == (T0, 0)
    forged = inbox.screen(replace(slices[2], signature=bytes(64)), "infrastructure")
    with pytest.raises(Rejected) as rejected:
        inbox.accept(forged)
    assert rejected.value.reason is RejectReason.BAD_SIGNATURE
    inbox.accept(screened)
    assert inbox.rejected_counts()["bad_signature"] == 1
