"""Signing and verifying EncodedBEV slices: ECDSA on NIST P-256 with SHA-256 over the
canonical bytes (canonical.py), the signer named by its certificate's HashedId8.

The authenticator of a slice is the signer's 8-byte certificate digest plus a 64-byte
signature ``r || s`` (each a 32-byte big-endian integer, as in IEEE 1609.2): 72 bytes.
``Verifier.verify`` runs the cheap checks (digest known, not revoked, valid at the message's
stamp, agent id and role as certified) before the signature.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, NamedTuple, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

from revqom_nodes.trust.canonical import DIGEST_BYTES, SliceFields, canonical_bytes
from revqom_nodes.trust.certificates import AgentCertificate
from revqom_nodes.trust.errors import TrustError

if TYPE_CHECKING:
    from revqom_nodes.trust.store import TrustStore

SIGNATURE_BYTES = 64  # r || s
AUTHENTICATOR_BYTES = DIGEST_BYTES + SIGNATURE_BYTES
_SCALAR_BYTES = SIGNATURE_BYTES // 2
_ECDSA = ec.ECDSA(hashes.SHA256())


class Claims(Protocol):
    """What a slice says of its sender, all the certificate checks read (``SliceFields``, or a
    received slice before its signed fields are gathered)."""

    @property
    def stamp_ns(self) -> int: ...

    @property
    def agent_id(self) -> str: ...

    @property
    def role(self) -> int: ...


class Rejection(str, Enum):
    """Why a slice was refused; the values are the receiver's counter names."""

    UNSIGNED = "unsigned"
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_SIGNER = "unknown_signer"
    REVOKED = "revoked"
    EXPIRED = "expired"  # the stamp lies outside the certificate's validity (also: not yet valid)
    ROLE_MISMATCH = "role_mismatch"  # agent id or role differ from the certificate's


class Authenticator(NamedTuple):
    """What a signed slice carries beside its fields."""

    signer_digest: bytes  # HashedId8 of the signer's certificate, 8 bytes; all zero: unsigned
    signature: bytes  # ECDSA P-256 r || s, 64 bytes

    def to_bytes(self) -> bytes:
        return self.signer_digest + self.signature


UNSIGNED = Authenticator(bytes(DIGEST_BYTES), bytes(SIGNATURE_BYTES))


class Verdict(NamedTuple):
    """The result of ``Verifier.verify``: the signer's certificate when known, and the reason of
    a rejection (``None``: accepted)."""

    signer: AgentCertificate | None
    rejection: Rejection | None

    @property
    def accepted(self) -> bool:
        return self.rejection is None


def sign_bytes(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """ECDSA-P256-SHA256 signature of ``data`` as 64 bytes ``r || s``."""
    r, s = utils.decode_dss_signature(key.sign(data, _ECDSA))
    return r.to_bytes(_SCALAR_BYTES, "big") + s.to_bytes(_SCALAR_BYTES, "big")


def verify_bytes(public_key: ec.EllipticCurvePublicKey, signature: bytes, data: bytes) -> bool:
    """Whether ``signature`` (64 bytes ``r || s``) is a valid signature of ``data``."""
    if len(signature) != SIGNATURE_BYTES:
        return False
    r = int.from_bytes(signature[:_SCALAR_BYTES], "big")
    s = int.from_bytes(signature[_SCALAR_BYTES:], "big")
    try:
        public_key.verify(utils.encode_dss_signature(r, s), data, _ECDSA)
    except InvalidSignature:
        return False
    return True


def check_identity(signer: AgentCertificate, *, agent_id: str, role: int) -> Rejection | None:
    """``ROLE_MISMATCH`` unless the certificate names ``agent_id`` and ``role`` (the message's
    fields, or what the topic a message came on belongs to)."""
    return None if signer.agent_id == agent_id and signer.role == role else Rejection.ROLE_MISMATCH


class Signer:
    """Signs slices with an agent's private key."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, certificate: AgentCertificate) -> None:
        if key.public_key() != certificate.public_key:
            raise TrustError(
                f"the private key does not belong to the certificate of {certificate.agent_id!r}"
            )
        self._key = key
        self.certificate = certificate

    def sign(self, fields: SliceFields) -> Authenticator:
        """The authenticator of ``fields``; raises ``TrustError`` when the fields are not the
        signer's agent id and role (a sender never signs for another agent)."""
        if check_identity(self.certificate, agent_id=fields.agent_id, role=fields.role) is not None:
            raise TrustError(
                f"certificate of {self.certificate.agent_id!r} ({self.certificate.role.label}) cannot sign "
                f"slices of agent {fields.agent_id!r} with role {fields.role}"
            )
        digest = self.certificate.digest
        return Authenticator(digest, sign_bytes(self._key, canonical_bytes(fields, digest)))


class Verifier:
    """Verifies slices against a trust store (the CA's agent certificates and revocation list)."""

    def __init__(self, store: TrustStore) -> None:
        self._certificates = dict(store.certificates)
        self._revoked = store.revoked

    def verify(self, fields: SliceFields, authenticator: Authenticator | None) -> Verdict:
        """Accept ``fields`` signed with ``authenticator`` or name the first failed check, in
        order: unsigned, unknown signer, revoked, expired at ``fields``' stamp, agent id or role
        not the certificate's, bad signature (the only costly check, about 0.1 ms)."""
        verdict = self.check_certificate(fields, authenticator)
        if verdict.rejection is not None or authenticator is None or verdict.signer is None:
            return verdict
        if not self.check_signature(fields, authenticator, verdict.signer):
            return Verdict(verdict.signer, Rejection.BAD_SIGNATURE)
        return verdict

    def check_certificate(self, claims: Claims, authenticator: Authenticator | None) -> Verdict:
        """The cheap checks of ``verify`` (all but the signature); accepted: the signer is known,
        not revoked, valid at the claimed stamp and certified for the claimed agent id and role."""
        if authenticator is None or not any(authenticator.signer_digest):
            return Verdict(None, Rejection.UNSIGNED)
        signer = self._certificates.get(bytes(authenticator.signer_digest))
        if signer is None:
            return Verdict(None, Rejection.UNKNOWN_SIGNER)
        if signer.digest in self._revoked:
            return Verdict(signer, Rejection.REVOKED)
        if not signer.valid_at(claims.stamp_ns):
            return Verdict(signer, Rejection.EXPIRED)
        return Verdict(signer, check_identity(signer, agent_id=claims.agent_id, role=claims.role))

    @staticmethod
    def check_signature(fields: SliceFields, authenticator: Authenticator, signer: AgentCertificate) -> bool:
        """Whether ``authenticator``'s signature over ``fields`` verifies with ``signer``'s key."""
        try:
            data = canonical_bytes(fields, signer.digest)
        except ValueError:
            return False
        return verify_bytes(signer.public_key, bytes(authenticator.signature), data)
