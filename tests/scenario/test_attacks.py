"""The forged messages of ``revqom bench attack`` (scenario/attacks.py): what they carry, and
that an enforcing inbox rejects every one of them and still assembles the legit frames whole."""

from __future__ import annotations

import datetime as dt
import time

import numpy as np
import pytest

from revqom_nodes.codec.wire import Encoding
from revqom_nodes.runtime.encoder import AgentEncoder
from revqom_nodes.runtime.inbox import Inbox
from revqom_nodes.runtime.security import SecurityMode, SliceGuard, sign_slice
from revqom_nodes.runtime.validation import Expectations, Rejected
from revqom_nodes.scenario.attacks import (
    ATTACKS,
    FLIP_FIELDS,
    PATCH_CELLS,
    Credentials,
    Forger,
    Frame,
    Sweep,
    constant_map,
    flip_bit,
    make_credentials,
    most_common_triple,
    phantom_patch,
    sign_as,
    unsigned,
)
from revqom_nodes.trust import Authenticator, Verifier, load_trust_store
from revqom_nodes.trust.signing import Rejection
from tests.runtime.tiny_model import build_tiny_model, tiny_cloud

MS = 1_000_000

# The reasons each attack may be rejected for, and those it must produce at least once.
EXPECTED = {
    "phantom_patch": {"unsigned", "bad_signature", "unknown_signer"},
    "erasure": {"unsigned", "bad_signature", "unknown_signer"},
    "stamp_future": {"unsigned", "bad_signature", "unknown_signer"},
    # stale: the screen refuses a sweep older than max_age before any cryptography
    "stamp_past": {"unsigned", "bad_signature", "unknown_signer", "clock_skew", "stale"},
    "replay": {"replayed"},
    "bit_flip": {"bad_signature", "unknown_signer", "role_mismatch", "clock_skew"},
    "wrong_role": {"unsigned", "unknown_signer", "role_mismatch"},  # role checked before the signature
    "revoked": {"revoked"},
    "expired": {"expired"},
    "unsigned": {"unsigned"},
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("attack")
    model = build_tiny_model()
    credentials = make_credentials(root / "keys", root / "attacker", now=dt.datetime.now(dt.timezone.utc))
    encoder = AgentEncoder(model, Encoding.PACKED, slice_bytes=24, interleave=2)
    ego = Sweep("vehicle", 0, "vehicle_lidar", np.eye(4), encoder.encode(tiny_cloud(1)).indices)
    T_infra = np.eye(4)
    T_infra[:3, 3] = (8.0, 3.0, 4.0)
    infra = Sweep("infrastructure", 1, "infrastructure_lidar", T_infra, encoder.encode(tiny_cloud(2)).indices)
    return model, credentials, encoder, ego, infra, root / "keys"


def _forger(encoder: AgentEncoder, credentials: Credentials, ego: Sweep) -> Forger:
    return Forger(
        encoder,
        credentials,
        triple=ego.indices[:, 0, 0],
        patch_cell=(10, 20),
        erasure_triple=most_common_triple(ego.indices),
    )


def test_phantom_patch_and_constant_maps() -> None:
    indices = np.zeros((3, 10, 12), np.int64)
    patched = phantom_patch(indices, np.array([5, 6, 7]), 4, 11)
    changed = np.argwhere(patched[0] != 0)
    assert {tuple(c) for c in changed} == {(r, c) for r in (3, 4, 5) for c in (10, 11)}  # clipped at the edge
    assert (patched[:, 4, 11] == [5, 6, 7]).all() and not indices.any()
    assert (phantom_patch(indices, np.array([1, 1, 1]), 5, 5) != 0).sum() == 3 * PATCH_CELLS**2
    constant = constant_map((3, 4, 5), np.array([1, 2, 3]))
    assert (constant[:, 2, 3] == [1, 2, 3]).all() and (most_common_triple(constant) == [1, 2, 3]).all()


def test_each_flipped_field_differs_in_exactly_one_bit(setup) -> None:
    _, credentials, encoder, ego, _, _ = setup
    (message, *_) = encoder.messages(
        encoder.pack(ego.indices),
        agent_id="vehicle",
        T_world_from_lidar=ego.T_world_from_lidar,
        stamp_ns=5 * MS,
    )
    message = sign_as(message, credentials.legit["vehicle"])
    for field in FLIP_FIELDS:
        flipped = flip_bit(message, field, 1234)
        name = {"stamp": "stamp_ns"}.get(field, field)
        before, after = getattr(message, name), getattr(flipped, name)
        if field == "position":
            before, after = np.float64(before[0]).view(np.uint64), np.float64(after[0]).view(np.uint64)
        if isinstance(before, (bytes, bytearray, memoryview)):
            diff = np.unpackbits(
                np.frombuffer(bytes(before), np.uint8) ^ np.frombuffer(bytes(after), np.uint8)
            )
            assert diff.sum() == 1, field
        else:
            assert bin(int(before) ^ int(after)).count("1") == 1, field
    with pytest.raises(ValueError, match="unknown field"):
        flip_bit(message, "codebook_id", 0)


def test_credentials_are_rejected_for_their_reasons(setup) -> None:
    _, credentials, encoder, ego, _, keys = setup
    verifier = Verifier(load_trust_store(keys))
    (message, *_) = encoder.messages(
        encoder.pack(ego.indices),
        agent_id="infrastructure",
        role=1,
        T_world_from_lidar=ego.T_world_from_lidar,
        stamp_ns=time.time_ns(),
    )

    def verdict(m) -> Rejection | None:
        from revqom_nodes.runtime.frames import signed_fields

        return verifier.verify(signed_fields(m), Authenticator(m.signer_digest, m.signature)).rejection

    assert verdict(sign_as(message, credentials.legit["infrastructure"])) is None
    assert verdict(sign_as(message, credentials.attacker["infrastructure"])) is Rejection.UNKNOWN_SIGNER
    assert verdict(sign_as(message, credentials.revoked)) is Rejection.REVOKED
    assert verdict(sign_as(message, credentials.expired)) is Rejection.EXPIRED
    assert verdict(sign_as(message, credentials.legit["vehicle"])) is Rejection.ROLE_MISMATCH
    assert verdict(unsigned(message)) is Rejection.UNSIGNED


@pytest.mark.parametrize("attack", ATTACKS)
def test_every_forged_message_is_rejected_and_legit_frames_stay_whole(setup, attack: str) -> None:
    model, credentials, encoder, ego, infra, keys = setup
    forger = _forger(encoder, credentials, ego)
    from revqom_nodes.runtime.security import load_signer

    signers = {s.agent_id: load_signer(keys, agent_id=s.agent_id, role=s.role) for s in (ego, infra)}
    now = {"ns": 0}
    guard = SliceGuard.load(
        keys, mode=SecurityMode.ENFORCE, max_clock_skew_ms=2000, clock_ns=lambda: now["ns"]
    )
    inbox = Inbox(
        Expectations.of(model),
        agent_ids=["vehicle", "infrastructure"],
        ego_agent_id="vehicle",
        max_age_ms=150,
        sync_wait_ms=200,
        guard=guard,
    )
    reasons: set[str] = set()
    previous = None
    start = time.time_ns()
    for k in range(1, len(FLIP_FIELDS) + 1):
        stamp = start + k * 100 * MS
        now["ns"] = stamp
        frame = Frame(
            stamp,
            k,
            [sign_slice(m, signers["vehicle"]) for m in forger.legit(ego, stamp_ns=stamp, sequence=k)],
            [
                sign_slice(m, signers["infrastructure"])
                for m in forger.legit(infra, stamp_ns=stamp, sequence=k)
            ],
        )
        forged = forger.attack(attack, ego, infra, frame, previous)
        assert forged.before or previous is None
        for message in [*forged.before, *frame.infra, *frame.ego, *forged.after]:
            legit = any(message is m for m in [*frame.infra, *frame.ego])
            try:
                inbox.receive(message, message.agent_id)
            except Rejected as rejected:
                assert not legit, rejected
                reasons.add(rejected.reason.value)
            else:
                assert legit, f"{attack}: a forged message was accepted"
        ego_map, _ = inbox.next_ego()
        assert ego_map is not None and ego_map.stamp_ns == stamp and ego_map.valid is None
        np.testing.assert_array_equal(ego_map.indices, ego.indices)
        (infra_map,) = inbox.partners_of(ego_map)
        assert infra_map is not None and infra_map.stamp_ns == stamp and infra_map.valid is None
        np.testing.assert_array_equal(infra_map.indices, infra.indices)
        previous = frame
    assert reasons <= EXPECTED[attack] and reasons, reasons
    if attack not in ("bit_flip", "stamp_past"):
        assert reasons == EXPECTED[attack], reasons


def test_an_unknown_attack_is_a_clear_error(setup) -> None:
    _, credentials, encoder, ego, infra, _ = setup
    frame = Frame(0, 0, [], [])
    with pytest.raises(ValueError, match="valid:"):
        _forger(encoder, credentials, ego).attack("teleport", ego, infra, frame, None)


def test_bench_arguments_are_checked() -> None:
    import argparse

    from revqom_nodes.scenario.bench_attack import _run, parse_rates

    assert parse_rates("500, 1000,2000") == [500, 1000, 2000] and parse_rates("") == []
    for bad in ("500,-1", "fast"):
        with pytest.raises(ValueError):
            parse_rates(bad)
    arguments = dict(out=None, frames=3, attacks="phantom_patch", flood_rates="", model=None)
    for change in ({"attacks": "phantom_patch,teleport"}, {"frames": 1}, {"flood_rates": "0"}):
        assert _run(argparse.Namespace(**{**arguments, **change})) == 2
