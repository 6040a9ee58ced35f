"""A key directory: the project CA, its agents' keys and certificates, the revocation list.

Layout (PEM files; private keys mode 0600, everything else 0644, directories 0700)::

    ca.key.pem, ca.cert.pem          the project CA (root of trust)
    revoked.crl.pem                  X.509 CRL signed by the CA: serials of revoked agent certificates
    agents/<agent id>.key.pem        an agent's private key (PKCS#8, unencrypted)
    agents/<agent id>.cert.pem       its certificate (certificates.py)

A receiver needs ``ca.cert.pem``, ``revoked.crl.pem`` and ``agents/*.cert.pem``; a sender its
own key besides. Nothing is overwritten unless ``force`` is given.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from revqom_nodes.trust.certificates import (
    AgentCertificate,
    Role,
    check_agent_id,
    check_ca,
    create_ca,
    generate_key,
    issue_certificate,
    read_agent_certificate,
)
from revqom_nodes.trust.errors import TrustError

log = logging.getLogger(__name__)

PRIVATE_MODE = 0o600
PUBLIC_MODE = 0o644


@dataclass(frozen=True)
class KeyDirectory:
    """The paths of one key directory."""

    root: Path

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key.pem"

    @property
    def ca_certificate(self) -> Path:
        return self.root / "ca.cert.pem"

    @property
    def revocation_list(self) -> Path:
        return self.root / "revoked.crl.pem"

    @property
    def agents(self) -> Path:
        return self.root / "agents"

    def agent_key(self, agent_id: str) -> Path:
        return self.agents / f"{agent_id}.key.pem"

    def agent_certificate(self, agent_id: str) -> Path:
        return self.agents / f"{agent_id}.cert.pem"

    def agent_certificates(self) -> list[Path]:
        return sorted(self.agents.glob("*.cert.pem")) if self.agents.is_dir() else []


def write_file(path: Path, data: bytes, *, private: bool, force: bool) -> None:
    """Write ``data`` to ``path`` atomically with mode 0600 (``private``) or 0644; refuse to
    replace an existing file unless ``force``."""
    if path.exists() and not force:
        raise TrustError(f"{path} exists; refusing to overwrite it (pass --force to replace it)")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = PRIVATE_MODE if private else PUBLIC_MODE
    temporary = path.with_name(path.name + ".tmp")
    temporary.unlink(missing_ok=True)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    os.fchmod(descriptor, mode)  # exact mode whatever the umask
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
    os.replace(temporary, path)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise TrustError(f"{what} not found: {path}") from None
    except OSError as error:
        raise TrustError(f"cannot read {what} {path}: {error}") from error


def read_certificate(path: Path, what: str = "certificate") -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(_read(path, what))
    except ValueError as error:
        raise TrustError(f"{what} {path} is not a PEM certificate: {error}") from error


def read_private_key(path: Path, what: str = "private key") -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(_read(path, what), password=None)
    except (ValueError, TypeError) as error:
        raise TrustError(f"{what} {path} is not an unencrypted PEM private key: {error}") from error
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TrustError(f"{what} {path} is not an elliptic-curve (P-256) key")
    return key


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _certificate_pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def read_revocation_list(path: Path, ca_certificate: x509.Certificate) -> x509.CertificateRevocationList:
    """The CRL at ``path``, checked to be issued and signed by the CA."""
    try:
        crl = x509.load_pem_x509_crl(_read(path, "revocation list"))
        signed = crl.is_signature_valid(ca_certificate.public_key())  # type: ignore[arg-type]
    except (ValueError, TypeError) as error:
        raise TrustError(f"revocation list {path} is not a PEM CRL: {error}") from error
    if not signed or crl.issuer != ca_certificate.subject:
        raise TrustError(
            f"revocation list {path} is not signed by the CA {ca_certificate.subject.rfc4514_string()}"
        )
    return crl


def _write_revocation_list(
    directory: KeyDirectory,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_certificate: x509.Certificate,
    revoked: list[x509.RevokedCertificate],
    *,
    force: bool,
) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_certificate.subject)
        .last_update(now)
        .next_update(max(ca_certificate.not_valid_after_utc, now + dt.timedelta(days=1)))  # not checked
    )
    for entry in revoked:
        builder = builder.add_revoked_certificate(entry)
    crl = builder.sign(ca_key, hashes.SHA256())
    write_file(
        directory.revocation_list, crl.public_bytes(serialization.Encoding.PEM), private=False, force=force
    )


def init_ca(
    directory: KeyDirectory, *, name: str, not_before: dt.datetime, days: float, force: bool
) -> x509.Certificate:
    """Create the project CA (key, self-signed certificate, empty revocation list). With
    ``force``, an existing CA is replaced and its agents' files are deleted (they would no
    longer verify)."""
    existing = [
        p for p in (directory.ca_key, directory.ca_certificate, directory.revocation_list) if p.exists()
    ]
    existing += sorted(directory.agents.glob("*.pem")) if directory.agents.is_dir() else []
    if existing and not force:
        raise TrustError(
            f"{directory.root} already holds a CA or agents ({existing[0].name}, ...); "
            "refusing to replace them (pass --force to start over)"
        )
    for path in existing:
        log.warning("removing %s", path)
        path.unlink()
    key = generate_key()
    certificate = create_ca(key, name=name, not_before=not_before, days=days)
    write_file(directory.ca_key, _key_pem(key), private=True, force=False)
    write_file(directory.ca_certificate, _certificate_pem(certificate), private=False, force=False)
    _write_revocation_list(directory, key, certificate, [], force=False)
    return certificate


def _read_ca(directory: KeyDirectory) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = read_private_key(directory.ca_key, "CA private key")
    certificate = read_certificate(directory.ca_certificate, "CA certificate")
    check_ca(certificate)
    if key.public_key() != certificate.public_key():
        raise TrustError(f"{directory.ca_key} does not belong to {directory.ca_certificate}")
    return key, certificate


def read_agents(directory: KeyDirectory, ca_certificate: x509.Certificate) -> list[AgentCertificate]:
    """Every agent certificate of the directory, each checked against the CA and its file name."""
    agents = []
    for path in directory.agent_certificates():
        agent = read_agent_certificate(read_certificate(path), ca_certificate)
        if directory.agent_certificate(agent.agent_id) != path:
            raise TrustError(f"{path} holds the certificate of agent {agent.agent_id!r}")
        agents.append(agent)
    return agents


def issue_agent(
    directory: KeyDirectory, *, agent_id: str, role: Role, not_before: dt.datetime, days: float, force: bool
) -> AgentCertificate:
    """Create an agent's key and CA-signed certificate. With ``force``, an existing certificate
    of that agent is revoked and its key and certificate replaced."""
    check_agent_id(agent_id)
    ca_key, ca_certificate = _read_ca(directory)
    paths = (directory.agent_key(agent_id), directory.agent_certificate(agent_id))
    if any(p.exists() for p in paths) and not force:
        raise TrustError(
            f"agent {agent_id!r} already has a key or certificate in {directory.agents}; "
            "refusing to replace them (pass --force to revoke and replace)"
        )
    key = generate_key()
    certificate = issue_certificate(
        ca_key,
        ca_certificate,
        key.public_key(),
        agent_id=agent_id,
        role=role,
        not_before=not_before,
        days=days,
    )
    if paths[1].exists():
        revoke(directory, agent_id=agent_id)
    write_file(paths[0], _key_pem(key), private=True, force=force)
    write_file(paths[1], _certificate_pem(certificate), private=False, force=force)
    return read_agent_certificate(certificate, ca_certificate)


def revoke(
    directory: KeyDirectory, *, agent_id: str | None = None, digest: bytes | None = None
) -> AgentCertificate:
    """Add the certificate of ``agent_id``, or the one whose HashedId8 is ``digest``, to the
    revocation list (a no-op when it is already there)."""
    if agent_id is None and digest is None:
        raise TrustError("name the certificate to revoke by agent id or digest")
    ca_key, ca_certificate = _read_ca(directory)
    matches = [
        a
        for a in read_agents(directory, ca_certificate)
        if (agent_id is None or a.agent_id == agent_id) and (digest is None or a.digest == digest)
    ]
    if len(matches) != 1:
        wanted = f"agent {agent_id!r}" if digest is None else f"digest {digest.hex()}"
        raise TrustError(f"no certificate of {wanted} in {directory.agents}")
    crl = read_revocation_list(directory.revocation_list, ca_certificate)
    revoked = list(crl)
    if crl.get_revoked_certificate_by_serial_number(matches[0].serial) is None:
        revoked.append(
            x509.RevokedCertificateBuilder()
            .serial_number(matches[0].serial)
            .revocation_date(dt.datetime.now(dt.timezone.utc))
            .build()
        )
        _write_revocation_list(directory, ca_key, ca_certificate, revoked, force=True)
    return matches[0]
