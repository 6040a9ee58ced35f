"""Signed slices in the runtime: the sender's signing and the receiver's authentication rules
(docs/security.md, "Reception rules").

Sender: ``load_signer`` reads the agent's key and certificate from a key directory;
``AgentEncoder.messages(..., signer=...)`` signs every slice with ``sign_slice``.

Receiver: ``SliceGuard`` runs the checks that need no per-agent state in two steps.
``screen`` (microseconds, on the reception thread): signer digest present (``unsigned``) and
known (``unknown_signer``), not revoked, valid at the stamp (``expired``), certified for the
message's agent id and role (``role_mismatch``), stamp within ``max_clock_skew_ms`` of the
receiver's clock (``clock_skew``); it names the signer. ``verify`` (about 0.12 ms, on the
verify worker): the ECDSA signature (``bad_signature``). ``inbox.Inbox`` screens right after
the topic check and verifies before any per-agent state changes. ``SecurityMode``:
``enforce`` rejects, ``permissive`` counts and goes on, ``off`` checks nothing.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from pathlib import Path

from revqom_nodes.runtime.errors import RuntimeConfigError
from revqom_nodes.runtime.frames import NS_PER_MS, ReceivedSlice, signed_fields
from revqom_nodes.runtime.validation import RejectReason
from revqom_nodes.trust import (
    AgentCertificate,
    Authenticator,
    Signer,
    TrustError,
    Verifier,
    check_identity,
    load_trust_store,
)


class SecurityMode(str, enum.Enum):
    """What the receiver does with a slice that fails authentication."""

    ENFORCE = "enforce"  # reject and count it
    PERMISSIVE = "permissive"  # count it and use it anyway (migration)
    OFF = "off"  # check nothing


def parse_security_mode(name: str, trust_dir: str) -> SecurityMode:
    """``security.mode`` -> SecurityMode: ``auto`` is ``enforce`` with a trust directory and
    ``off`` without; ``enforce`` and ``permissive`` need one. RuntimeConfigError otherwise."""
    name = str(name).strip().lower()
    if name == "auto":
        return SecurityMode.ENFORCE if trust_dir else SecurityMode.OFF
    try:
        mode = SecurityMode(name)
    except ValueError:
        valid = ["auto", *(m.value for m in SecurityMode)]
        raise RuntimeConfigError(f"unknown security mode {name!r}; valid: {valid}") from None
    if mode is not SecurityMode.OFF and not trust_dir:
        raise RuntimeConfigError(f"security.mode {mode.value} needs security.trust_dir (a key directory)")
    return mode


def load_signer(trust_dir: str | Path, *, agent_id: str, role: int) -> Signer:
    """The signer of ``agent_id`` from a key directory (``revqom keys``); RuntimeConfigError when
    the directory does not hold a valid key and certificate of that agent id and role."""
    try:
        signer = load_trust_store(trust_dir, agent_id=agent_id).signer
    except TrustError as exc:
        raise RuntimeConfigError(f"security.trust_dir: {exc}") from None
    if signer is None or check_identity(signer.certificate, agent_id=agent_id, role=role) is not None:
        raise RuntimeConfigError(
            f"security.trust_dir {trust_dir}: the certificate of {agent_id!r} is not for role {role}"
        )
    return signer


def sign_slice(message: ReceivedSlice, signer: Signer) -> ReceivedSlice:
    """``message`` with its authenticator (signer digest and signature) filled in."""
    authenticator = signer.sign(signed_fields(message))
    return dataclasses.replace(
        message, signer_digest=authenticator.signer_digest, signature=authenticator.signature
    )


class SliceGuard:
    """The receiver's authentication of single slices against a trust store.

    clock_ns: the receiver's clock (the node's ROS clock: under a replay, the replay's /clock);
    0 means not known yet (no /clock received) and skips the clock-skew check.
    """

    def __init__(
        self,
        verifier: Verifier,
        *,
        mode: SecurityMode,
        max_clock_skew_ms: float,
        clock_ns: Callable[[], int],
    ) -> None:
        if not max_clock_skew_ms > 0:
            raise RuntimeConfigError(f"security.max_clock_skew_ms must be > 0, got {max_clock_skew_ms}")
        self.verifier = verifier
        self.mode = mode
        self.max_clock_skew_ns = int(max_clock_skew_ms * NS_PER_MS)
        self._clock_ns = clock_ns

    @classmethod
    def load(
        cls,
        trust_dir: str | Path,
        *,
        mode: SecurityMode,
        max_clock_skew_ms: float,
        clock_ns: Callable[[], int],
    ) -> SliceGuard:
        """A guard over the trust store of ``trust_dir``; RuntimeConfigError when it does not load."""
        try:
            store = load_trust_store(trust_dir)
        except TrustError as exc:
            raise RuntimeConfigError(f"security.trust_dir: {exc}") from None
        return cls(Verifier(store), mode=mode, max_clock_skew_ms=max_clock_skew_ms, clock_ns=clock_ns)

    def screen(
        self, message: ReceivedSlice
    ) -> tuple[tuple[RejectReason, str] | None, AgentCertificate | None]:
        """(the first failed cheap check as (reason, detail), or None; the signer's certificate
        when it passed them, else None). Everything but the signature: no cryptography."""
        authenticator = Authenticator(bytes(message.signer_digest), bytes(message.signature))
        verdict = self.verifier.check_certificate(message, authenticator)
        if verdict.rejection is not None:
            return (
                RejectReason(verdict.rejection.value),
                f"{message.agent_id[:64]!r} slice {message.slice_index}: {verdict.rejection.value}",
            ), None
        now = self._clock_ns()
        if now and abs(message.stamp_ns - now) > self.max_clock_skew_ns:
            return (
                RejectReason.CLOCK_SKEW,
                f"{message.agent_id} stamp {message.stamp_ns} ns is {(message.stamp_ns - now) / 1e6:+.0f} ms "
                f"from the receiver's clock (max {self.max_clock_skew_ns / 1e6:g} ms)",
            ), None
        return None, verdict.signer

    def verify(self, message: ReceivedSlice, signer: AgentCertificate) -> tuple[RejectReason, str] | None:
        """``(BAD_SIGNATURE, detail)`` unless the signature of ``message`` verifies with the key
        of ``signer`` (the certificate ``screen`` named); None when it does."""
        authenticator = Authenticator(bytes(message.signer_digest), bytes(message.signature))
        if not self.verifier.check_signature(signed_fields(message), authenticator, signer):
            return RejectReason.BAD_SIGNATURE, f"{message.agent_id} slice {message.slice_index}"
        return None
