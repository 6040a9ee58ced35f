"""Keys and X.509 certificates of the project CA and its agents (ECDSA on NIST P-256).

The CA certificate is self-signed (subject ``O=revqom, CN=<name>``, basic constraints
``CA:TRUE, pathlen:0``). An agent certificate is signed by the CA and names the agent in its
subject: ``O=revqom, OU=<role>, CN=<agent id>`` with role ``vehicle`` or ``infrastructure``
(basic constraints ``CA:FALSE``, key usage ``digitalSignature``). Both are signed with
ECDSA-with-SHA256. A certificate's digest is its HashedId8 (IEEE 1609.2): the last 8 bytes of
the SHA-256 of the certificate's DER encoding.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from enum import IntEnum

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from revqom_nodes.trust.canonical import DIGEST_BYTES
from revqom_nodes.trust.errors import TrustError

CURVE = ec.SECP256R1
ORGANIZATION = "revqom"
AGENT_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class Role(IntEnum):
    """An agent's role; the values are EncodedBEV's ``ROLE_*`` constants."""

    VEHICLE = 0
    INFRASTRUCTURE = 1

    @property
    def label(self) -> str:
        """The name in certificates and on the command line: ``vehicle``, ``infrastructure``."""
        return self.name.lower()

    @classmethod
    def from_label(cls, label: str) -> Role:
        try:
            return cls[label.upper()]
        except KeyError:
            raise TrustError(f"role must be one of {[r.label for r in cls]}, got {label!r}") from None


@dataclass(frozen=True)
class AgentCertificate:
    """An agent certificate as the verifier uses it; validity bounds in UTC."""

    agent_id: str
    role: Role
    digest: bytes  # HashedId8, 8 bytes
    serial: int
    not_before: dt.datetime
    not_after: dt.datetime
    public_key: ec.EllipticCurvePublicKey
    certificate: x509.Certificate

    def valid_at(self, time_ns: int) -> bool:
        """Whether ``time_ns`` (ns since the Unix epoch) lies in the validity period (inclusive)."""
        return int(self.not_before.timestamp()) * 10**9 <= time_ns <= int(self.not_after.timestamp()) * 10**9


def check_agent_id(agent_id: str) -> None:
    """Raise ``TrustError`` unless ``agent_id`` is 1-64 letters, digits, ``_``, ``.`` or ``-``
    (starting with a letter or digit), so that it is also a safe file name."""
    if not AGENT_ID_PATTERN.fullmatch(agent_id):
        raise TrustError(f"agent id must match {AGENT_ID_PATTERN.pattern}, got {agent_id!r}")


def generate_key() -> ec.EllipticCurvePrivateKey:
    """A fresh P-256 private key from the operating system's random source."""
    return ec.generate_private_key(CURVE())


def certificate_digest(certificate: x509.Certificate) -> bytes:
    """HashedId8: the low-order (last) 8 bytes of SHA-256 over the certificate's DER encoding."""
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).digest()[-DIGEST_BYTES:]


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    not_before: dt.datetime,
    days: float,
    *,
    ca: bool,
) -> x509.CertificateBuilder:
    """An unsigned certificate: a CA's (signs certificates and revocation lists) or an
    agent's (signs messages)."""
    if days <= 0:
        raise TrustError(f"validity must be positive, got {days} days")
    usage = x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        .add_extension(usage, critical=True)
    )


def create_ca(
    key: ec.EllipticCurvePrivateKey, *, name: str, not_before: dt.datetime, days: float
) -> x509.Certificate:
    """The self-signed project CA certificate of ``key``, valid ``days`` from ``not_before``."""
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    return _builder(subject, subject, key.public_key(), not_before, days, ca=True).sign(key, hashes.SHA256())


def issue_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_certificate: x509.Certificate,
    public_key: ec.EllipticCurvePublicKey,
    *,
    agent_id: str,
    role: Role,
    not_before: dt.datetime,
    days: float,
) -> x509.Certificate:
    """An agent certificate for ``public_key``, signed by the CA; its validity must lie inside
    the CA's."""
    check_agent_id(agent_id)
    not_after = not_before + dt.timedelta(days=days)
    if not_before < ca_certificate.not_valid_before_utc or not_after > ca_certificate.not_valid_after_utc:
        raise TrustError(
            f"validity {not_before:%Y-%m-%d %H:%M} .. {not_after:%Y-%m-%d %H:%M} UTC lies outside the CA's "
            f"({ca_certificate.not_valid_before_utc:%Y-%m-%d %H:%M} .. "
            f"{ca_certificate.not_valid_after_utc:%Y-%m-%d %H:%M}); shorten it or renew the CA"
        )
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role.label),
            x509.NameAttribute(NameOID.COMMON_NAME, agent_id),
        ]
    )
    return _builder(subject, ca_certificate.subject, public_key, not_before, days, ca=False).sign(
        ca_key, hashes.SHA256()
    )


def _subject_value(certificate: x509.Certificate, oid: x509.ObjectIdentifier, what: str) -> str:
    values = certificate.subject.get_attributes_for_oid(oid)
    if len(values) != 1:
        raise TrustError(f"certificate {certificate.subject.rfc4514_string()!r} has no single {what}")
    return str(values[0].value)


def check_ca(certificate: x509.Certificate) -> None:
    """Raise ``TrustError`` unless ``certificate`` is a self-signed P-256 CA certificate."""
    try:
        certificate.verify_directly_issued_by(certificate)
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound) as error:
        raise TrustError(f"not a self-signed CA certificate: {error or type(error).__name__}") from error
    if not constraints.ca or not isinstance(certificate.public_key(), ec.EllipticCurvePublicKey):
        raise TrustError("not a CA certificate with a P-256 key")


def read_agent_certificate(
    certificate: x509.Certificate, ca_certificate: x509.Certificate
) -> AgentCertificate:
    """Check that the CA issued ``certificate`` for a P-256 key inside the CA's validity and read
    its agent id and role; raises ``TrustError`` otherwise."""
    try:
        certificate.verify_directly_issued_by(ca_certificate)
    except (ValueError, TypeError, InvalidSignature) as error:
        raise TrustError(
            f"certificate {certificate.subject.rfc4514_string()!r} is not signed by the CA "
            f"{ca_certificate.subject.rfc4514_string()!r}"
        ) from error
    public_key = certificate.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(public_key.curve, CURVE):
        raise TrustError(f"certificate {certificate.subject.rfc4514_string()!r} does not hold a P-256 key")
    agent_id = _subject_value(certificate, NameOID.COMMON_NAME, "agent id (CN)")
    role = Role.from_label(_subject_value(certificate, NameOID.ORGANIZATIONAL_UNIT_NAME, "role (OU)"))
    not_before, not_after = certificate.not_valid_before_utc, certificate.not_valid_after_utc
    if not_before < ca_certificate.not_valid_before_utc or not_after > ca_certificate.not_valid_after_utc:
        raise TrustError(f"certificate of {agent_id!r} is valid outside the CA's validity period")
    return AgentCertificate(
        agent_id=agent_id,
        role=role,
        digest=certificate_digest(certificate),
        serial=certificate.serial_number,
        not_before=not_before,
        not_after=not_after,
        public_key=public_key,
        certificate=certificate,
    )
