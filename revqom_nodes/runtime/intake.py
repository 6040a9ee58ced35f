"""``Intake``: bounded per-sender queues between the fusion node's reception callbacks and its
verify worker, so that a flood costs the executor microseconds per message and cannot starve
the other senders (docs/security.md, "Flood resistance").

The reception thread ``offer``s each screened message under its sender (``Screened.sender``:
agent id and the certificate digest it passed the cheap checks with); the verify worker
``take``s them round-robin, one per sender with messages waiting, so the ego's slices are
verified at their own pace whatever floods the infrastructure's topic. Unknown or revoked
digests never get here (``Inbox.screen`` rejects them), so the senders are the configured
agents' certificates, a bounded set.

Per sender, two FIFO queues of at most ``depth`` messages each, the oldest pushed out when
full (counted by the caller as ``intake_overflow``): ``known`` holds slices of a sweep the
worker already accepted a slice of (``confirm``), ``new`` the rest, and ``known`` is served
first. A forger holding no key cannot sign, so under a flood that copies a legit signer's
digest the first verified slice of a legit sweep moves its sibling slices, already queued, to
the front: a sweep needs one of its slices to survive the flood, not all of them.
Memory: at most 2 x ``depth`` messages per sender. Thread-safe.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from revqom_nodes.runtime.errors import RuntimeConfigError

Item = TypeVar("Item")
Sweep = tuple[int, int]  # (stamp ns, sequence)
CONFIRMED_SWEEPS = 4  # accepted sweeps remembered per sender (a partner's buffer holds a few frames)


@dataclass
class _Sender(Generic[Item]):
    known: deque[tuple[Sweep, Item]]
    new: deque[tuple[Sweep, Item]]
    confirmed: deque[Sweep] = field(default_factory=lambda: deque(maxlen=CONFIRMED_SWEEPS))


class Intake(Generic[Item]):
    """Per-sender bounded queues served round-robin (``known`` sweeps first within a sender).

    depth: messages per queue (two queues per sender).
    """

    def __init__(self, *, depth: int) -> None:
        if depth < 1:
            raise RuntimeConfigError(f"intake depth must be >= 1, got {depth}")
        self.depth = depth
        self._senders: dict[Hashable, _Sender[Item]] = {}
        self._turn: deque[Hashable] = deque()  # senders with messages waiting, next to serve first
        self._lock = threading.Lock()

    def offer(self, sender: Hashable, sweep: Sweep, item: Item) -> int:
        """Queue ``item`` (a slice of ``sweep``) from ``sender``; returns how many queued
        messages it pushed out (0 or 1: the oldest of its queue, when full)."""
        with self._lock:
            state = self._senders.get(sender)
            if state is None:
                state = self._senders[sender] = _Sender(deque(), deque())
            queue = state.known if sweep in state.confirmed else state.new
            dropped = 0
            if len(queue) == self.depth:
                queue.popleft()
                dropped = 1
            queue.append((sweep, item))
            if sender not in self._turn:
                self._turn.append(sender)
            return dropped

    def take(self) -> Item | None:
        """The next message to verify (the next sender's in turn), or None when all are empty."""
        with self._lock:
            if not self._turn:
                return None
            sender = self._turn.popleft()
            state = self._senders[sender]
            _, item = (state.known or state.new).popleft()
            if state.known or state.new:
                self._turn.append(sender)
            return item

    def confirm(self, sender: Hashable, sweep: Sweep) -> int:
        """A slice of ``sweep`` from ``sender`` was accepted: its queued and later slices go
        first. Returns how many queued messages the move pushed out of a full ``known`` queue."""
        with self._lock:
            state = self._senders.get(sender)
            if state is None or sweep in state.confirmed:
                return 0
            state.confirmed.append(sweep)
            moving = [entry for entry in state.new if entry[0] == sweep]
            if not moving:
                return 0
            kept = [entry for entry in state.new if entry[0] != sweep]
            state.new.clear()
            state.new.extend(kept)
            dropped = max(0, len(state.known) + len(moving) - self.depth)
            state.known.extend(moving)
            for _ in range(dropped):
                state.known.popleft()
            return dropped

    def __len__(self) -> int:
        """Messages waiting, all senders together."""
        with self._lock:
            return sum(len(s.known) + len(s.new) for s in self._senders.values())
