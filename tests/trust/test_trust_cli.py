"""``revqom keys`` end to end in a temporary directory."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from revqom_nodes.cli import main


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:
    status = main(["keys", *argv])
    out = capsys.readouterr().out
    return status, json.loads(out) if status == 0 else {}


def test_keys_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys = str(tmp_path / "keys")
    assert _run(capsys, "init", "--dir", keys, "--not-before", "2021-01-01")[0] == 0
    status, vehicle = _run(capsys, "issue", "--dir", keys, "--agent-id", "vehicle", "--role", "vehicle",
                           "--not-before", "2021-01-01", "--days", "3000")  # fmt: skip
    assert status == 0 and vehicle["role"] == "vehicle" and len(vehicle["digest"]) == 16
    assert stat.S_IMODE(Path(vehicle["key"]).stat().st_mode) == 0o600
    status, infrastructure = _run(
        capsys, "issue", "--dir", keys, "--agent-id", "rsu-7", "--role", "infrastructure"
    )
    assert status == 0 and infrastructure["status"] == "valid"

    assert _run(capsys, "revoke", "--dir", keys, "--agent-id", "vehicle")[1]["revoked"] == "vehicle"
    assert (
        _run(capsys, "revoke", "--dir", keys, "--digest", infrastructure["digest"])[1]["revoked"] == "rsu-7"
    )
    status, listing = _run(capsys, "list", "--dir", keys)
    assert status == 0 and "revqom project CA" in listing["ca"]
    assert [(a["agent_id"], a["status"]) for a in listing["agents"]] == [
        ("rsu-7", "revoked"),
        ("vehicle", "revoked"),
    ]


@pytest.mark.parametrize(
    "argv",
    [
        ("init",),  # a CA exists already
        ("issue", "--agent-id", "vehicle", "--role", "vehicle"),  # the agent exists already
        ("issue", "--agent-id", "../x", "--role", "vehicle"),
        ("issue", "--agent-id", "car", "--role", "vehicle", "--days", "99999"),  # beyond the CA
        ("issue", "--agent-id", "car", "--role", "vehicle", "--not-before", "yesterday"),
        ("revoke", "--agent-id", "truck"),
        ("revoke", "--digest", "xyz"),
    ],
    ids=["init_twice", "issue_twice", "bad_id", "too_long", "bad_date", "unknown_agent", "bad_digest"],
)
def test_refusals_exit_1_and_change_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]
) -> None:
    keys = tmp_path / "keys"
    assert _run(capsys, "init", "--dir", str(keys))[0] == 0
    assert _run(capsys, "issue", "--dir", str(keys), "--agent-id", "vehicle", "--role", "vehicle")[0] == 0
    before = {p: p.read_bytes() for p in keys.rglob("*") if p.is_file()}
    assert main(["keys", argv[0], "--dir", str(keys), *argv[1:]]) == 1
    assert {p: p.read_bytes() for p in keys.rglob("*") if p.is_file()} == before


def test_force_replaces(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys = str(tmp_path / "keys")
    assert _run(capsys, "init", "--dir", keys)[0] == 0
    first = _run(capsys, "issue", "--dir", keys, "--agent-id", "vehicle", "--role", "vehicle")[1]
    second = _run(capsys, "issue", "--dir", keys, "--agent-id", "vehicle", "--role", "vehicle", "--force")[1]
    assert first["digest"] != second["digest"]
    assert _run(capsys, "init", "--dir", keys, "--force")[0] == 0
    assert _run(capsys, "list", "--dir", keys)[1]["agents"] == []
