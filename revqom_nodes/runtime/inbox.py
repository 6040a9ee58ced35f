"""``Inbox``: the fusion node's received messages, its counters, and which ego frame to fuse next.

Thread-safe: reception callbacks call ``receive``, the fusion worker ``next_ego`` and
``partners_of``. Memory is bounded: at most ``buffer_size`` frames per configured agent, each
one fixed-size ``SliceAssembly``, and ``max_pending`` ego frames; messages from unknown agents
are counted only.

Slices: messages with the same agent id, stamp and sequence are the slices of one frame (the
whole map is its one slice). The first slice makes the frame (usable from then on); later
ones fill its assembly. A frame is settled when all its slices arrived, or when a slice of
the agent's next frame arrived (senders publish a frame's slices back to back, so the missing
ones are lost). Fusion gets a snapshot, an ``AssembledMap`` (``validation.FrameAssembly``).

Pairing rule (deterministic, so that a live run matches the offline evaluation):
for an ego frame E and another agent, the candidates are that agent's held frames with
``|stamp - E.stamp| <= max_age_ms``; the one closest in time to E is fused (the newer on a
tie). Live, with nothing from the future yet, that is the agent's newest message. An ego
frame is fused once every other agent has a frame that no later one can beat (stamped at or
after E, or less than half of ``sweep_period_ms`` before E: the agent's next sweep comes a
period later) and that frame is settled, or has gone quiet, or ``sync_wait_ms`` after E's
first slice arrived, whichever is first; E itself waits the same way for its own slices.
An agent goes quiet when a wait for it times out with nothing to fuse, and is awake again
with its next message. For runs that must match the offline evaluation frame by frame,
``sync_wait_ms`` must cover the agent's sweep period plus its encoding time.

Order of the checks of one message (cheap first; docs/security.md, "Reception rules"), in two
steps. ``screen`` (microseconds, on the reception thread, no cryptography): the topic's agent,
then with a ``security.SliceGuard`` the slice's certificate and clock skew, the header fields
(``validation.check_header``), and a read of the per-agent state that refuses what could
never be accepted whatever its signature (a slice already placed, a sweep within
``TIME_JUMP_NS`` behind the agent's last one, a partner sweep that is stale): that is what
makes a replay cheap to reject. ``accept`` (the verify worker; ``runtime/intake.py`` queues
in between): the ECDSA signature, the pose and payload (``validation.decode_slice``), and only
then the per-agent state: with authentication enforced, a slice seen before or a sweep not
newer than the signer's last is ``replayed`` (``out_of_order`` without it). ``receive`` runs
both. No single slice clears a buffer: a stamp ``TIME_JUMP_NS`` or more behind an agent's
last sweep (a replay starting over) restarts that agent's buffers, and the ego's every
buffer, only when ``JUMP_FRAMES`` consecutive sweeps agree (the ones before are rejected).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from revqom_nodes.runtime.errors import RuntimeConfigError
from revqom_nodes.runtime.frames import NS_PER_MS, AssembledMap, ReceivedSlice
from revqom_nodes.runtime.security import SecurityMode, SliceGuard
from revqom_nodes.runtime.selection import NotFused
from revqom_nodes.runtime.validation import (
    CheckedSlice,
    Expectations,
    FrameAssembly,
    Rejected,
    RejectReason,
    check_header,
    decode_slice,
)
from revqom_nodes.trust import AgentCertificate

log = logging.getLogger(__name__)

TIME_JUMP_NS = 1_000_000_000  # a stamp this far behind the last one is a restart (a looping replay)
JUMP_FRAMES = 3  # consecutive sweeps that must agree on a jump back before it restarts the buffers


class Screened(NamedTuple):
    """A message that passed ``Inbox.screen``: what ``Inbox.accept`` takes."""

    message: ReceivedSlice
    signer: AgentCertificate | None  # the certificate to verify against; None: no authentication

    @property
    def sender(self) -> tuple[str, bytes]:
        """(agent id, signer digest; empty without a screened signer): one intake queue each."""
        return self.message.agent_id, b"" if self.signer is None else self.signer.digest

    @property
    def sweep(self) -> tuple[int, int]:
        """(stamp ns, sequence): the slices of one sweep share it."""
        return self.message.stamp_ns, self.message.sequence


@dataclass
class _Held:
    """One frame being assembled (its header: the first slice that arrived)."""

    assembly: FrameAssembly
    closed: bool = False  # a later frame of the agent started: no more slices will come

    @property
    def stamp_ns(self) -> int:
        return self.assembly.header.stamp_ns

    @property
    def settled(self) -> bool:
        return self.closed or self.assembly.complete


@dataclass
class _Agent:
    frames: deque[_Held]
    last_stamp_ns: int | None = None
    bytes_received: int = 0
    accepted: int = 0
    quiet: bool = False
    jump_stamps: list[int] = field(default_factory=list)  # sweeps so far of an unconfirmed jump back


@dataclass
class _Pending:
    held: _Held
    deadline_ns: int
    waited_for: set[str] = field(default_factory=set)


class Inbox:
    """Validated frames of the configured agents (ego first in ``agent_ids``).

    guard: authenticates each slice (``security.SliceGuard``); None, or its mode ``off``: no
    authentication. clock_ns: the clock of the sync-wait deadlines (monotonic).
    """

    def __init__(
        self,
        expect: Expectations,
        *,
        agent_ids: Sequence[str],
        ego_agent_id: str,
        max_age_ms: float,
        sync_wait_ms: float = 0.0,
        sweep_period_ms: float = 0.0,
        buffer_size: int = 4,
        max_pending: int = 4,
        clock_ns: Callable[[], int] = time.monotonic_ns,
        guard: SliceGuard | None = None,
    ) -> None:
        if ego_agent_id not in agent_ids:
            raise RuntimeConfigError(f"ego agent {ego_agent_id!r} is not among the agents {list(agent_ids)}")
        if len(set(agent_ids)) != len(agent_ids):
            raise RuntimeConfigError(f"agent ids must be unique, got {list(agent_ids)}")
        if not max_age_ms > 0 or sync_wait_ms < 0 or buffer_size < 1 or max_pending < 1:
            raise RuntimeConfigError(
                f"need max_age_ms > 0, sync_wait_ms >= 0, buffer_size >= 1, max_pending >= 1; got "
                f"{max_age_ms}, {sync_wait_ms}, {buffer_size}, {max_pending}"
            )
        self.expect = expect
        self.ego_agent_id = ego_agent_id
        self.agent_ids = [ego_agent_id, *[a for a in agent_ids if a != ego_agent_id]]
        self.max_age_ns = int(max_age_ms * NS_PER_MS)
        self.sync_wait_ns = int(sync_wait_ms * NS_PER_MS)
        self.sweep_period_ns = int(sweep_period_ms * NS_PER_MS)
        self._clock_ns = clock_ns
        self.guard = guard if guard is not None and guard.mode is not SecurityMode.OFF else None
        enforced = self.guard is not None and self.guard.mode is SecurityMode.ENFORCE
        self._order_reason = RejectReason.REPLAYED if enforced else RejectReason.OUT_OF_ORDER
        self._agents = {a: _Agent(deque(maxlen=buffer_size)) for a in self.agent_ids}
        self._pending: deque[_Pending] = deque(maxlen=max_pending)
        self._newest_ego_ns: int | None = None
        self._rejected: Counter[RejectReason] = Counter({reason: 0 for reason in RejectReason})
        self._lock = threading.Lock()
        self.ego_frames_dropped = 0  # pending ego frames pushed out by newer ones
        self.time_jumps = 0

    # ---- reception ----------------------------------------------------------------------
    def receive(self, message: ReceivedSlice, topic_agent_id: str | None = None) -> None:
        """Validate and keep ``message`` (``screen``, then ``accept``), or raise ``Rejected``
        (and count its reason).

        ``topic_agent_id``: the agent configured for the topic the message came on (a message
        claiming another id is an unknown agent there); None accepts any configured agent.
        """
        self.accept(self.screen(message, topic_agent_id))

    def screen(self, message: ReceivedSlice, topic_agent_id: str | None = None) -> Screened:
        """The cheap checks of ``message`` (no signature, no decoding, no state change), or raise
        ``Rejected`` (and count its reason); the result goes to ``accept``."""
        try:
            return self._screen(message, topic_agent_id)
        except Rejected as rejected:
            self.count(rejected.reason)
            raise

    def accept(self, screened: Screened) -> None:
        """Verify, decode and keep a screened message, or raise ``Rejected`` (and count it)."""
        try:
            self._accept(screened)
        except Rejected as rejected:
            self.count(rejected.reason)
            raise

    def _screen(self, message: ReceivedSlice, topic_agent_id: str | None) -> Screened:
        agent_id = message.agent_id
        if agent_id not in self._agents or (topic_agent_id is not None and agent_id != topic_agent_id):
            expected = topic_agent_id or self.agent_ids
            raise Rejected(RejectReason.UNKNOWN_AGENT, f"agent {agent_id[:64]!r} (expected {expected})")
        signer = None
        if self.guard is not None:
            failed, signer = self.guard.screen(message)
            if failed is not None:
                if self.guard.mode is SecurityMode.ENFORCE:
                    raise Rejected(*failed)
                self.count(failed[0])  # permissive: counted, used anyway
        check_header(message, self.expect)
        with self._lock:
            self._check_fresh(message, self._agents[agent_id])
        return Screened(message, signer)

    def _check_fresh(self, message: ReceivedSlice, state: _Agent) -> None:
        """Rejected when the agent's state alone refuses ``message``, whoever signed it (what
        ``_accept`` would refuse after the signature and decoding): a slice already placed, a
        new sweep stamped within ``TIME_JUMP_NS`` behind the last, a stale partner sweep."""
        sweep = (message.stamp_ns, message.sequence)
        held = next((h for h in state.frames if (h.stamp_ns, h.assembly.header.sequence) == sweep), None)
        if held is not None:
            if held.assembly.has(message.slice_index):
                raise Rejected(
                    self._order_reason,
                    f"{message.agent_id} slice {message.slice_index} of sweep {message.stamp_ns} "
                    "is a duplicate",
                )
            return
        last = state.last_stamp_ns
        if last is not None and last - TIME_JUMP_NS < message.stamp_ns <= last:
            raise Rejected(
                self._order_reason,
                f"{message.agent_id} stamp {message.stamp_ns} ns is not after its last {last} ns",
            )
        newest_ego = self._newest_ego_ns
        if (
            message.agent_id != self.ego_agent_id
            and newest_ego is not None
            and message.stamp_ns < newest_ego - self.max_age_ns
        ):
            raise Rejected(
                RejectReason.STALE,
                f"{message.agent_id} sweep is {(newest_ego - message.stamp_ns) / 1e6:.1f} "
                f"ms older than the newest ego sweep (max_age_ms {self.max_age_ns / 1e6:g})",
            )

    def _accept(self, screened: Screened) -> None:
        message, signer = screened
        if self.guard is not None and signer is not None:
            failed = self.guard.verify(message, signer)
            if failed is not None:
                if self.guard.mode is SecurityMode.ENFORCE:
                    raise Rejected(*failed)
                self.count(failed[0])  # permissive: counted, used anyway
        checked = decode_slice(message, self.expect)
        sweep = (message.stamp_ns, message.sequence)
        with self._lock:
            state = self._agents[message.agent_id]
            held = next(
                (h for h in state.frames if (h.stamp_ns, h.assembly.header.sequence) == sweep), None
            )
            if held is not None:
                try:
                    held.assembly.add(checked)
                except Rejected as rejected:
                    if rejected.reason is RejectReason.OUT_OF_ORDER:  # a duplicate slice
                        raise Rejected(self._order_reason, rejected.detail) from None
                    raise
            else:
                self._start_frame(checked, state)
            state.bytes_received += message.payload_bytes
            state.accepted += 1
            state.quiet = False

    def _start_frame(self, checked: CheckedSlice, state: _Agent) -> None:
        frame = checked.message
        if frame.agent_id == self.ego_agent_id:
            self._accept_ego(frame, state)
        else:
            self._accept_other(frame, state)
        assembly = FrameAssembly(frame, self.expect)
        assembly.add(checked)
        for older in state.frames:
            older.closed = True
        held = _Held(assembly)
        state.frames.append(held)
        state.last_stamp_ns = frame.stamp_ns
        if frame.agent_id == self.ego_agent_id:
            if len(self._pending) == self._pending.maxlen:
                self.ego_frames_dropped += 1
            self._pending.append(_Pending(held, self._clock_ns() + self.sync_wait_ns))
            self._newest_ego_ns = frame.stamp_ns

    def _check_order(self, frame: ReceivedSlice, state: _Agent) -> bool:
        """True when the frame restarts the agent's clock: the ``JUMP_FRAMES``-th consecutive
        sweep stamped ``TIME_JUMP_NS`` or more behind its last one (the sweeps of the jump before
        it are rejected, and a sweep in order forgets them)."""
        last, jump = state.last_stamp_ns, state.jump_stamps
        if last is None or frame.stamp_ns > last:
            jump.clear()
            return False
        if frame.stamp_ns > last - TIME_JUMP_NS:
            raise Rejected(
                self._order_reason,
                f"{frame.agent_id} stamp {frame.stamp_ns} ns is not after its last {last} ns",
            )
        if jump and frame.stamp_ns < jump[-1]:
            jump.clear()
        if not jump or frame.stamp_ns > jump[-1]:
            jump.append(frame.stamp_ns)
        if len(jump) < JUMP_FRAMES:
            raise Rejected(
                self._order_reason,
                f"{frame.agent_id} stamp jumped back {(last - frame.stamp_ns) / 1e9:.3f} s: "
                f"{len(jump)} of the {JUMP_FRAMES} consecutive sweeps that restart its buffers",
            )
        jump.clear()
        return True

    def _accept_ego(self, frame: ReceivedSlice, state: _Agent) -> None:
        if self._check_order(frame, state):
            log.warning(
                "ego time jumped back %.3f s (%d sweeps agree): clearing every buffer",
                (state.last_stamp_ns - frame.stamp_ns) / 1e9,
                JUMP_FRAMES,
            )
            self.time_jumps += 1
            for agent in self._agents.values():
                agent.frames.clear()
                agent.last_stamp_ns = None
            self._pending.clear()

    def _accept_other(self, frame: ReceivedSlice, state: _Agent) -> None:
        newest_ego = self._newest_ego_ns
        if newest_ego is not None and frame.stamp_ns < newest_ego - self.max_age_ns:
            raise Rejected(
                RejectReason.STALE,
                f"{frame.agent_id} sweep is {(newest_ego - frame.stamp_ns) / 1e6:.1f} "
                f"ms older than the newest ego sweep (max_age_ms {self.max_age_ns / 1e6:g})",
            )
        if self._check_order(frame, state):
            state.frames.clear()

    # ---- fusion side --------------------------------------------------------------------
    def next_ego(self) -> tuple[AssembledMap | None, float]:
        """(the oldest pending ego frame, if it may be fused now, else None; seconds to wait)."""
        with self._lock:
            if not self._pending:
                return None, float("inf")
            pending = self._pending[0]
            ego_stamp_ns = pending.held.stamp_ns
            now = self._clock_ns()
            waiting = [a for a in self.agent_ids[1:] if self._waits_for(a, ego_stamp_ns)]
            if (waiting or not pending.held.settled) and now < pending.deadline_ns:
                return None, (pending.deadline_ns - now) / 1e9
            for agent_id in waiting:  # timed out: quiet unless it has something to fuse with this frame
                state = self._agents[agent_id]
                state.quiet = self._select(state.frames, ego_stamp_ns) is None
            self._pending.popleft()
            return pending.held.assembly.snapshot(), 0.0

    def _waits_for(self, agent_id: str, ego_stamp_ns: int) -> bool:
        state = self._agents[agent_id]
        if state.quiet:
            return False
        half_period = self.sweep_period_ns / 2
        if not any(
            h.stamp_ns >= ego_stamp_ns or ego_stamp_ns - h.stamp_ns < half_period
            for h in state.frames
        ):
            return True
        selected = self._select(state.frames, ego_stamp_ns)
        return selected is not None and not selected.settled

    def partners_of(self, ego: AssembledMap) -> list[AssembledMap | NotFused]:
        """For each other agent (``agent_ids[1:]``), a snapshot of the frame to fuse with ``ego``, or
        why there is none: ``STALE`` when every frame held is farther than ``max_age_ms`` from it,
        ``NO_MESSAGE`` when none is held."""
        with self._lock:
            paired: list[AssembledMap | NotFused] = []
            for agent_id in self.agent_ids[1:]:
                frames = self._agents[agent_id].frames
                held = self._select(frames, ego.stamp_ns)
                if held is not None:
                    paired.append(held.assembly.snapshot())
                else:
                    paired.append(NotFused.STALE if frames else NotFused.NO_MESSAGE)
            return paired

    def _select(self, frames: Sequence[_Held], ego_stamp_ns: int) -> _Held | None:
        best = None
        for held in frames:
            distance = abs(held.stamp_ns - ego_stamp_ns)
            if distance <= self.max_age_ns and (
                best is None or distance <= abs(best.stamp_ns - ego_stamp_ns)
            ):
                best = held
        return best

    # ---- diagnostics --------------------------------------------------------------------
    def count(self, reason: RejectReason, times: int = 1) -> None:
        """Count ``times`` rejections of ``reason`` found outside ``receive`` (permissive
        authentication failures, partners left out of range by fusion)."""
        with self._lock:
            self._rejected[reason] += times

    def rejected_counts(self) -> dict[str, int]:
        """Every reason (also those never seen, as 0) -> messages rejected for it."""
        with self._lock:
            return {reason.value: self._rejected[reason] for reason in RejectReason}

    def bytes_received(self) -> list[int]:
        """Payload bytes accepted so far (every slice's), per agent in ``agent_ids`` order."""
        with self._lock:
            return [self._agents[a].bytes_received for a in self.agent_ids]

    def held_frames(self) -> int:
        """Frames held in the per-agent buffers (the memory bound's subject)."""
        with self._lock:
            return sum(len(state.frames) for state in self._agents.values())
