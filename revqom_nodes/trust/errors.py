"""The trust package's exception type."""

from __future__ import annotations


class TrustError(ValueError):
    """A key, certificate, revocation list or key directory is missing, corrupt or inconsistent,
    or a request would overwrite one without ``force``."""
