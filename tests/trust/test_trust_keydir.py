"""Key directories: file modes, refusal to overwrite, and clear errors for bad files."""

from __future__ import annotations

import datetime as dt
import shutil
import stat
from pathlib import Path

import pytest

from revqom_nodes.trust.certificates import Role
from revqom_nodes.trust.errors import TrustError
from revqom_nodes.trust.keydir import KeyDirectory, init_ca, issue_agent, read_revocation_list, revoke
from revqom_nodes.trust.store import load_trust_store
from tests.trust.conftest import NOT_BEFORE, make_keys


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_private_keys_are_0600_and_the_rest_0644(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "keys")
    assert _mode(keys.ca_key) == _mode(keys.agent_key("vehicle")) == 0o600
    assert _mode(keys.ca_certificate) == _mode(keys.agent_certificate("vehicle")) == 0o644
    assert _mode(keys.revocation_list) == 0o644
    assert _mode(keys.root) == _mode(keys.agents) == 0o700


def test_nothing_is_overwritten_without_force(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "keys")
    before = {p: p.read_bytes() for p in keys.root.rglob("*.pem")}
    with pytest.raises(TrustError, match="refusing"):
        init_ca(keys, name="again", not_before=NOT_BEFORE, days=10, force=False)
    with pytest.raises(TrustError, match="refusing"):
        issue_agent(keys, agent_id="vehicle", role=Role.VEHICLE, not_before=NOT_BEFORE, days=10, force=False)
    assert {p: p.read_bytes() for p in keys.root.rglob("*.pem")} == before


def test_forced_issue_revokes_the_replaced_certificate(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "keys")
    old = next(a for a in load_trust_store(keys.root).certificates.values() if a.agent_id == "vehicle")
    new = issue_agent(keys, agent_id="vehicle", role=Role.VEHICLE, not_before=NOT_BEFORE, days=10, force=True)
    store = load_trust_store(keys.root, agent_id="vehicle")
    assert store.signer is not None and store.signer.certificate.digest == new.digest != old.digest
    crl = read_revocation_list(keys.revocation_list, store.ca_certificate)
    assert [entry.serial_number for entry in crl] == [old.serial]
    assert not store.revoked  # the old certificate's file is gone, its serial on the list
    assert revoke(keys, agent_id="vehicle").digest == new.digest


def test_forced_init_starts_over(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "keys")
    init_ca(keys, name="new CA", not_before=NOT_BEFORE, days=10, force=True)
    assert load_trust_store(keys.root).certificates == {}


def test_agent_validity_must_lie_inside_the_ca_validity(tmp_path: Path) -> None:
    keys = KeyDirectory(tmp_path / "keys")
    init_ca(keys, name="CA", not_before=NOT_BEFORE, days=10, force=False)
    with pytest.raises(TrustError, match="outside the CA"):
        issue_agent(keys, agent_id="vehicle", role=Role.VEHICLE, not_before=NOT_BEFORE, days=11, force=False)
    with pytest.raises(TrustError, match="outside the CA"):
        issue_agent(
            keys, agent_id="vehicle", role=Role.VEHICLE, not_before=NOT_BEFORE - dt.timedelta(days=1), days=2,
            force=False,
        )  # fmt: skip


@pytest.mark.parametrize("agent_id", ["", "../ca", "a b", "x" * 65])
def test_agent_ids_must_be_safe_names(tmp_path: Path, agent_id: str) -> None:
    keys = make_keys(tmp_path / "keys")
    with pytest.raises(TrustError, match="agent id"):
        issue_agent(keys, agent_id=agent_id, role=Role.VEHICLE, not_before=NOT_BEFORE, days=1, force=False)


def test_revoke_names_a_certificate(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "keys")
    with pytest.raises(TrustError, match="no certificate"):
        revoke(keys, agent_id="truck")
    digest = load_trust_store(keys.root, agent_id="infrastructure").signer.certificate.digest  # type: ignore[union-attr]
    assert revoke(keys, digest=digest).agent_id == "infrastructure"
    assert revoke(keys, digest=digest).agent_id == "infrastructure"  # again: no change
    assert load_trust_store(keys.root).revoked == {digest}


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda k, o: k.ca_certificate.unlink(), "CA certificate not found"),
        (lambda k, o: k.revocation_list.unlink(), "revocation list not found"),
        (lambda k, o: k.ca_certificate.write_text("garbage"), "not a PEM certificate"),
        (lambda k, o: k.agent_certificate("vehicle").write_bytes(b"-----BEGIN CERTIFICATE-----\nAAAA\n"),
         "not a PEM certificate"),
        (lambda k, o: shutil.copy(o.revocation_list, k.revocation_list), "not signed by the CA"),
        (lambda k, o: shutil.copy(o.agent_certificate("vehicle"), k.agent_certificate("vehicle")),
         "not signed by the CA"),
        (lambda k, o: shutil.copy(k.agent_certificate("vehicle"), k.agent_certificate("truck")),
         "holds the certificate of agent 'vehicle'"),
        (lambda k, o: shutil.copy(o.agent_certificate("vehicle"), k.ca_certificate), "not a self-signed CA"),
    ],
    ids=["missing_ca", "missing_crl", "corrupt_ca", "corrupt_agent", "foreign_crl", "foreign_agent",
         "renamed", "agent_as_ca"],
)  # fmt: skip
def test_bad_files_are_clear_errors(tmp_path: Path, damage, message: str) -> None:
    keys, other = make_keys(tmp_path / "keys"), make_keys(tmp_path / "other")
    damage(keys, other)
    with pytest.raises(TrustError, match=message):
        load_trust_store(keys.root)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda k, o: k.agent_key("vehicle").unlink(), "private key of 'vehicle' not found"),
        (lambda k, o: k.agent_key("vehicle").write_text("garbage"), "not an unencrypted PEM private key"),
        (lambda k, o: shutil.copy(k.agent_key("infrastructure"), k.agent_key("vehicle")), "does not belong"),
        (lambda k, o: None, "no certificate of agent 'truck'"),
    ],
    ids=["missing_key", "corrupt_key", "other_key", "unknown_agent"],
)
def test_bad_own_key_is_a_clear_error(tmp_path: Path, damage, message: str) -> None:
    keys = make_keys(tmp_path / "keys")
    damage(keys, None)
    with pytest.raises(TrustError, match=message):
        load_trust_store(keys.root, agent_id="truck" if "truck" in message else "vehicle")
