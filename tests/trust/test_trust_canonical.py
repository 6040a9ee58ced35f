"""Canonical signed bytes: every message field covered, unambiguous, fixed layout."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from revqom_nodes.trust.canonical import DIGEST_BYTES, SliceFields, canonical_bytes
from revqom_nodes.trust.certificates import Role
from tests.trust.conftest import make_fields

MSG = Path(__file__).resolve().parents[2] / "msg" / "EncodedBEV.msg"
DIGEST = bytes(range(1, DIGEST_BYTES + 1))
# message fields whose value is split over several SliceFields
SPLIT = {"header": ("stamp_sec", "stamp_nanosec", "frame_id"), "lidar_pose": ("position", "orientation")}
AUTHENTICATOR = ["signer_digest", "signature"]  # the last fields: the digest is signed, the signature not


def _message_fields() -> list[str]:
    names = []
    for line in MSG.read_text().splitlines():
        match = re.match(r"\s*([\w/]+(?:\[\d*\])?)\s+(\w+)\s*(?:#.*)?$", line)
        if match and "=" not in line:
            names.append(match.group(2))
    return names


def test_every_message_field_is_covered_in_message_order() -> None:
    names = _message_fields()
    assert names[-len(AUTHENTICATOR):] == AUTHENTICATOR
    assert f"uint8[{DIGEST_BYTES}] signer_digest" in MSG.read_text()
    assert "uint8[64] signature" in MSG.read_text()
    expected = [part for name in names[: -len(AUTHENTICATOR)] for part in SPLIT.get(name, (name,))]
    assert [f.name for f in dataclasses.fields(SliceFields)] == expected


def test_role_values_match_the_message_constants() -> None:
    constants = dict(re.findall(r"uint8 ROLE_(\w+) = (\d+)", MSG.read_text()))
    assert constants == {r.name: str(r.value) for r in Role}


def test_length_formula() -> None:
    fields = make_fields(payload=bytes(1100), frame_id="infrastructure_lidar", agent_id="infrastructure")
    assert len(canonical_bytes(fields, DIGEST)) == 144 + 20 + 14 + 64 + 1100 == 1342


def _changed(field: dataclasses.Field) -> object:
    value = getattr(make_fields(), field.name)
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, bytes):
        return value + b"\x00"
    if isinstance(value, tuple):
        return (value[0] + 1.0, *value[1:])
    return value + 1


@pytest.mark.parametrize("field", dataclasses.fields(SliceFields), ids=lambda f: f.name)
def test_each_field_changes_the_bytes(field: dataclasses.Field) -> None:
    base = canonical_bytes(make_fields(), DIGEST)
    assert canonical_bytes(make_fields(**{field.name: _changed(field)}), DIGEST) != base


def test_digest_and_length_prefixes_disambiguate() -> None:
    base = make_fields()
    assert canonical_bytes(base, DIGEST) != canonical_bytes(base, bytes(DIGEST_BYTES))
    moved = make_fields(frame_id=base.frame_id + base.agent_id[0], agent_id=base.agent_id[1:])
    assert canonical_bytes(moved, DIGEST) != canonical_bytes(base, DIGEST)


def test_bytes_like_payloads_agree() -> None:
    import array

    payload = bytes.fromhex("8194c0")
    expected = canonical_bytes(make_fields(payload=payload), DIGEST)
    for same in (bytearray(payload), memoryview(payload), array.array("B", payload)):
        assert canonical_bytes(make_fields(payload=same), DIGEST) == expected


@pytest.mark.parametrize(
    "changes",
    [{"role": 256}, {"sequence": -1}, {"height": 70_000}, {"stamp_sec": 2**31}, {"position": (1.0, 2.0)}],
    ids=["role", "sequence", "height", "stamp", "position"],
)
def test_out_of_range_values_are_refused(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="out of range"):
        canonical_bytes(make_fields(**changes), DIGEST)


def test_wrong_digest_length_is_refused() -> None:
    with pytest.raises(ValueError, match="8 bytes"):
        canonical_bytes(make_fields(), b"short")
