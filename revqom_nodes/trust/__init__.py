"""Trust: the project CA, agent certificates, the revocation list, and signing and verifying
EncodedBEV slices (docs/security.md, docs/wire-format.md "Signed slices"). No ROS; imports
only the standard library and ``cryptography``.

Names are imported lazily so that ``canonical`` (standard library only) loads without
``cryptography``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TrustError": "errors",
    "SliceFields": "canonical",
    "canonical_bytes": "canonical",
    "Role": "certificates",
    "AgentCertificate": "certificates",
    "certificate_digest": "certificates",
    "KeyDirectory": "keydir",
    "TrustStore": "store",
    "load_trust_store": "store",
    "Authenticator": "signing",
    "UNSIGNED": "signing",
    "AUTHENTICATOR_BYTES": "signing",
    "Rejection": "signing",
    "Signer": "signing",
    "Verifier": "signing",
    "Verdict": "signing",
    "check_identity": "signing",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
