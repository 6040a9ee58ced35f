"""Signing and verifying slices: round trip, tampering, and every rejection reason."""

from __future__ import annotations

import pytest

from revqom_nodes.trust.canonical import canonical_bytes
from revqom_nodes.trust.certificates import Role
from revqom_nodes.trust.errors import TrustError
from revqom_nodes.trust.keydir import KeyDirectory, revoke
from revqom_nodes.trust.signing import (
    AUTHENTICATOR_BYTES,
    UNSIGNED,
    Authenticator,
    Rejection,
    Signer,
    Verifier,
    check_identity,
    verify_bytes,
)
from revqom_nodes.trust.store import TrustStore, load_trust_store
from tests.trust.conftest import make_fields, make_keys


def _signer(keys: KeyDirectory, agent_id: str = "vehicle") -> Signer:
    signer = load_trust_store(keys.root, agent_id=agent_id).signer
    assert signer is not None
    return signer


def _flip(data: bytes, bit: int) -> bytes:
    flipped = bytearray(data)
    flipped[bit // 8] ^= 1 << (bit % 8)
    return bytes(flipped)


def test_round_trip(keys: KeyDirectory) -> None:
    fields = make_fields()
    authenticator = _signer(keys).sign(fields)
    assert len(authenticator.to_bytes()) == AUTHENTICATOR_BYTES == 72
    verdict = Verifier(load_trust_store(keys.root)).verify(fields, authenticator)
    assert verdict.accepted and verdict.rejection is None
    assert verdict.signer is not None
    assert (verdict.signer.agent_id, verdict.signer.role) == ("vehicle", Role.VEHICLE)


def test_every_bit_flip_of_canonical_bytes_or_signature_fails(keys: KeyDirectory) -> None:
    signer = _signer(keys)
    fields = make_fields()
    data = canonical_bytes(fields, signer.certificate.digest)
    signature = signer.sign(fields).signature
    public_key = signer.certificate.public_key
    assert verify_bytes(public_key, signature, data)
    assert not any(verify_bytes(public_key, signature, _flip(data, bit)) for bit in range(len(data) * 8))
    assert not any(verify_bytes(public_key, _flip(signature, bit), data) for bit in range(len(signature) * 8))


def test_every_bit_flip_of_the_signer_digest_is_rejected(keys: KeyDirectory) -> None:
    fields = make_fields()
    authenticator = _signer(keys).sign(fields)
    verifier = Verifier(load_trust_store(keys.root))
    for bit in range(64):
        tampered = authenticator._replace(signer_digest=_flip(authenticator.signer_digest, bit))
        assert verifier.verify(fields, tampered).rejection is Rejection.UNKNOWN_SIGNER


@pytest.mark.parametrize(
    "changes",
    [{"sequence": 43}, {"stamp_nanosec": 100_000_001}, {"payload": bytes.fromhex("8194c1")},
     {"num_slices": 2}, {"position": (12.5, -3.25, 1.76)}, {"codebook_id": "ab" * 31 + "ac"},
     {"frame_id": "other_lidar"}],
    ids=["sequence", "stamp", "payload", "num_slices", "pose", "codebook_id", "frame_id"],
)  # fmt: skip
def test_changed_fields_are_a_bad_signature(keys: KeyDirectory, changes: dict[str, object]) -> None:
    authenticator = _signer(keys).sign(make_fields())
    verdict = Verifier(load_trust_store(keys.root)).verify(make_fields(**changes), authenticator)
    assert verdict.rejection is Rejection.BAD_SIGNATURE


def test_unsigned(keys: KeyDirectory) -> None:
    verifier = Verifier(load_trust_store(keys.root))
    assert verifier.verify(make_fields(), None).rejection is Rejection.UNSIGNED
    assert verifier.verify(make_fields(), UNSIGNED).rejection is Rejection.UNSIGNED


def test_signer_of_another_ca_is_unknown(keys: KeyDirectory, tmp_path) -> None:
    other = make_keys(tmp_path / "other")
    fields = make_fields()
    verdict = Verifier(load_trust_store(keys.root)).verify(fields, _signer(other).sign(fields))
    assert verdict.rejection is Rejection.UNKNOWN_SIGNER and verdict.signer is None


def test_revoked(tmp_path) -> None:
    keys = make_keys(tmp_path / "keys")
    fields = make_fields()
    authenticator = _signer(keys).sign(fields)
    revoke(keys, agent_id="vehicle")
    store = load_trust_store(keys.root)
    assert Verifier(store).verify(fields, authenticator).rejection is Rejection.REVOKED
    assert (
        Verifier(store)
        .verify(
            make_fields(agent_id="infrastructure", role=Role.INFRASTRUCTURE),
            _signer(keys, "infrastructure").sign(
                make_fields(agent_id="infrastructure", role=Role.INFRASTRUCTURE)
            ),
        )
        .accepted
    )
    with pytest.raises(TrustError, match="revoked"):
        load_trust_store(keys.root, agent_id="vehicle")


@pytest.mark.parametrize("stamp_sec", [1_600_000_000, 2_000_000_000], ids=["not_yet_valid", "expired"])
def test_stamp_outside_the_validity_is_expired(keys: KeyDirectory, stamp_sec: int) -> None:
    fields = make_fields(stamp_sec=stamp_sec)
    verdict = Verifier(load_trust_store(keys.root)).verify(fields, _signer(keys).sign(fields))
    assert verdict.rejection is Rejection.EXPIRED


@pytest.mark.parametrize(
    "changes", [{"agent_id": "infrastructure"}, {"role": Role.INFRASTRUCTURE}], ids=["agent_id", "role"]
)
def test_fields_of_another_identity_are_a_role_mismatch(
    keys: KeyDirectory, changes: dict[str, object]
) -> None:
    fields = make_fields()
    authenticator = _signer(keys).sign(fields)  # then rewritten by an attacker
    verdict = Verifier(load_trust_store(keys.root)).verify(make_fields(**changes), authenticator)
    assert verdict.rejection is Rejection.ROLE_MISMATCH


def test_check_identity_matches_the_topic(keys: KeyDirectory) -> None:
    certificate = _signer(keys).certificate
    assert check_identity(certificate, agent_id="vehicle", role=Role.VEHICLE) is None
    assert check_identity(certificate, agent_id="vehicle", role=1) is Rejection.ROLE_MISMATCH
    assert check_identity(certificate, agent_id="car", role=0) is Rejection.ROLE_MISMATCH


def test_signer_refuses_fields_of_another_agent(keys: KeyDirectory) -> None:
    with pytest.raises(TrustError, match="cannot sign"):
        _signer(keys).sign(make_fields(role=Role.INFRASTRUCTURE))


def test_signer_refuses_a_key_of_another_certificate(keys: KeyDirectory) -> None:
    vehicle, infrastructure = _signer(keys), _signer(keys, "infrastructure")
    with pytest.raises(TrustError, match="does not belong"):
        Signer(infrastructure._key, vehicle.certificate)


def test_fields_out_of_range_are_a_bad_signature(keys: KeyDirectory) -> None:
    authenticator = _signer(keys).sign(make_fields())
    verdict = Verifier(load_trust_store(keys.root)).verify(make_fields(sequence=-1), authenticator)
    assert verdict.rejection is Rejection.BAD_SIGNATURE


def test_rejection_names_are_the_counter_names() -> None:
    assert {r.value for r in Rejection} == {
        "unsigned", "bad_signature", "unknown_signer", "revoked", "expired", "role_mismatch"
    }  # fmt: skip


def test_a_store_without_agent_id_only_verifies(keys: KeyDirectory) -> None:
    store = load_trust_store(keys.root)
    assert isinstance(store, TrustStore) and store.signer is None
    assert len(store.certificates) == 2 and not store.revoked
    assert isinstance(_signer(keys).sign(make_fields()), Authenticator)
