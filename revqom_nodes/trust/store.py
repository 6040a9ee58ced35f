"""The trust store: what a node loads from a key directory (keydir.py) to verify slices and,
for a sender, to sign its own."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from revqom_nodes.trust.certificates import AgentCertificate, check_ca
from revqom_nodes.trust.errors import TrustError
from revqom_nodes.trust.keydir import (
    KeyDirectory,
    read_agents,
    read_certificate,
    read_private_key,
    read_revocation_list,
)
from revqom_nodes.trust.signing import Signer


@dataclass(frozen=True)
class TrustStore:
    """The CA, its agents' certificates by HashedId8, the digests of the revoked ones, and the
    own agent's signer (``None`` for a node that only verifies)."""

    ca_certificate: x509.Certificate
    certificates: Mapping[bytes, AgentCertificate]
    revoked: frozenset[bytes]
    signer: Signer | None


def load_trust_store(directory: Path | str, *, agent_id: str | None = None) -> TrustStore:
    """Load ``ca.cert.pem``, ``revoked.crl.pem`` and ``agents/*.cert.pem`` of ``directory``,
    and with ``agent_id`` that agent's key as the signer. Raises ``TrustError`` for a missing,
    corrupt or inconsistent file (a certificate or revocation list the CA did not sign, a key
    that does not match its certificate, a revoked own certificate)."""
    keys = KeyDirectory(Path(directory))
    ca_certificate = read_certificate(keys.ca_certificate, "CA certificate")
    check_ca(ca_certificate)
    crl = read_revocation_list(keys.revocation_list, ca_certificate)
    agents = read_agents(keys, ca_certificate)
    certificates = {a.digest: a for a in agents}
    revoked = frozenset(a.digest for a in agents if crl.get_revoked_certificate_by_serial_number(a.serial))
    signer = None
    if agent_id is not None:
        own = [a for a in agents if a.agent_id == agent_id]
        if not own:
            raise TrustError(f"no certificate of agent {agent_id!r} in {keys.agents}")
        if own[0].digest in revoked:
            raise TrustError(f"the certificate of agent {agent_id!r} is revoked; issue a new one")
        signer = Signer(read_private_key(keys.agent_key(agent_id), f"private key of {agent_id!r}"), own[0])
    return TrustStore(ca_certificate, certificates, revoked, signer)
