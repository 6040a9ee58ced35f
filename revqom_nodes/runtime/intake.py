"""``Intake``: bounded per-sender queues between the fusion node's reception callbacks and its
verify worker, so that a flood costs the executor microseconds per message and cannot starve
the other senders (docs/security.md, "Flood resistance").

The reception thread ``offer``s each screened message under its sender (``Screened.sender``:
agent id and the certificate digest it passed the cheap checks with) and wakes the verify
worker only when the offer says so (``Offered.wake``: not while the sender's slices wait for
a token, the worker's timed wait covering that); the worker
``take``s them round-robin, one per sender with messages waiting, so the ego's slices are
verified at their own pace whatever floods the infrastructure's topic. Unknown or revoked
digests never get here (``Inbox.screen`` rejects them), so the senders are the configured
agents' certificates, a bounded set.

Within a sender, a forger who copies the legit signer's digest shares its queues, so the order
matters. A legit sweep arrives as a burst of slices sharing one (stamp, sequence); a keyless
forger's slices fail verification, however they are stamped. Per sender:

- ``known``: slices of a sweep the worker already accepted a slice of (``confirm``), FIFO,
  served first: a sweep needs one verified slice, then its siblings follow.
- ``pending``: the other slices, grouped by sweep. The worker takes the oldest slice of the
  group with the most slices waiting; a group one of whose slices was refused after
  verification (``refuse``) ranks last. So a legit burst is verified before a flood of
  singly stamped forgeries, and a forger stamping many slices alike gains the rank of one
  refused group. When ``pending`` is full, the oldest slice of the lowest-ranked group goes.

Verifying costs the most (an ECDSA verification, about 90 µs of a core), and a forger who
stamps every slice anew makes each one a sweep nobody has verified yet. So the worker takes
``pending`` slices at most ``new_sweep_slices_per_s`` a second per sender (a token bucket of
one second's worth; ``known`` slices need no token): a legit sender starts about 10 sweeps a
second, each confirmed by one verified slice, while a flood's unverifiable slices cost at most
that many verifications a second and leave the CPU to reception and fusion. The queued ones
wait, the biggest group first when a token comes.

Each queue holds at most ``depth`` messages (what is pushed out is counted by the caller as
``intake_overflow``), so memory is at most 2 x ``depth`` messages per sender. Thread-safe.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, NamedTuple, TypeVar

from revqom_nodes.runtime.errors import RuntimeConfigError

Item = TypeVar("Item")
Sweep = tuple[int, int]  # (stamp ns, sequence)
CONFIRMED_SWEEPS = 4  # accepted sweeps remembered per sender (a partner's buffer holds a few frames)
REFUSED_RANK = 0  # the rank of a group with a refused slice (a group's rank is otherwise its size)


class Offered(NamedTuple):
    """What ``Intake.offer`` did: ``dropped`` queued messages pushed out (0 or 1); ``wake``: the
    worker must ask ``take`` again, because it would hand out a message of that sender now, or
    the sender had nothing queued (so the worker's wait did not count its next token). False
    only while the sender's earlier messages wait for a token: the timed wait that ``take``
    asked for ends when one comes."""

    dropped: int
    wake: bool


@dataclass
class _Group(Generic[Item]):
    items: deque[Item] = field(default_factory=deque)
    refused: bool = False

    @property
    def rank(self) -> int:
        return REFUSED_RANK if self.refused else len(self.items)


@dataclass
class _Sender(Generic[Item]):
    known: deque[Item] = field(default_factory=deque)
    groups: dict[Sweep, _Group[Item]] = field(default_factory=dict)
    ranks: dict[int, dict[Sweep, None]] = field(default_factory=dict)  # rank -> its groups, oldest first
    pending: int = 0  # slices in ``groups``
    confirmed: deque[Sweep] = field(default_factory=lambda: deque(maxlen=CONFIRMED_SWEEPS))
    tokens: float = math.inf  # ``pending`` slices the worker may take now (full when first seen)
    refilled_s: float = 0.0  # clock of the last refill

    def __len__(self) -> int:
        return len(self.known) + self.pending

    def _unrank(self, sweep: Sweep, rank: int) -> None:
        ranked = self.ranks[rank]
        del ranked[sweep]
        if not ranked:
            del self.ranks[rank]

    def _rerank(self, sweep: Sweep, group: _Group[Item], old_rank: int | None) -> None:
        if old_rank is not None:
            self._unrank(sweep, old_rank)
        if group.items:
            self.ranks.setdefault(group.rank, {})[sweep] = None
        else:
            del self.groups[sweep]

    def add(self, sweep: Sweep, item: Item) -> None:
        group = self.groups.get(sweep)
        old_rank = None if group is None else group.rank
        if group is None:
            group = self.groups[sweep] = _Group()
        group.items.append(item)
        self.pending += 1
        self._rerank(sweep, group, old_rank)

    def pop(self, rank: int) -> Item:
        """The oldest slice of the oldest group of ``rank``."""
        sweep = next(iter(self.ranks[rank]))
        group = self.groups[sweep]
        item = group.items.popleft()
        self.pending -= 1
        self._rerank(sweep, group, rank)
        return item

    def remove(self, sweep: Sweep) -> list[Item]:
        """Every pending slice of ``sweep``, oldest first."""
        group = self.groups.pop(sweep, None)
        if group is None:
            return []
        self._unrank(sweep, group.rank)
        self.pending -= len(group.items)
        return list(group.items)

    def refuse(self, sweep: Sweep) -> None:
        group = self.groups.get(sweep)
        if group is not None and not group.refused:
            old_rank = group.rank
            group.refused = True
            self._rerank(sweep, group, old_rank)


class Intake(Generic[Item]):
    """Per-sender bounded queues served round-robin (see the module docstring for the order
    within a sender). depth: messages per queue (two queues per sender);
    new_sweep_slices_per_s: ``pending`` slices taken per second per sender, at most; clock:
    seconds, monotonic."""

    def __init__(
        self, *, depth: int, new_sweep_slices_per_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if depth < 1:
            raise RuntimeConfigError(f"intake depth must be >= 1, got {depth}")
        if not new_sweep_slices_per_s > 0:
            raise RuntimeConfigError(f"new-sweep slices per second must be > 0, got {new_sweep_slices_per_s}")
        self.depth = depth
        self.rate = float(new_sweep_slices_per_s)
        self._clock = clock
        self._senders: dict[Hashable, _Sender[Item]] = {}
        self._turn: deque[Hashable] = deque()  # senders with messages waiting, next to serve first
        self._lock = threading.Lock()

    def offer(self, sender: Hashable, sweep: Sweep, item: Item) -> Offered:
        """Queue ``item`` (a slice of ``sweep``) from ``sender``."""
        with self._lock:
            state = self._senders.get(sender)
            if state is None:
                state = self._senders[sender] = _Sender()
            dropped = 0
            if sweep in state.confirmed:
                if len(state.known) == self.depth:
                    state.known.popleft()
                    dropped = 1
                state.known.append(item)
                takeable = True
            else:
                if state.pending == self.depth:
                    state.pop(min(state.ranks))
                    dropped = 1
                state.add(sweep, item)
                takeable = state.tokens + (self._clock() - state.refilled_s) * self.rate >= 1.0
            waiting = sender in self._turn
            if not waiting:
                self._turn.append(sender)
            return Offered(dropped, takeable or not waiting)

    def take(self) -> tuple[Item | None, float]:
        """(the next message to verify, the next sender's in turn that has one it may take, 0);
        or (None, seconds until a sender's next token): ``math.inf`` when all are empty."""
        with self._lock:
            now = self._clock()
            wait_s = math.inf
            for _ in range(len(self._turn)):
                sender = self._turn.popleft()
                state = self._senders[sender]
                item = None
                if state.known:
                    item = state.known.popleft()
                else:
                    state.tokens = min(self.rate, state.tokens + (now - state.refilled_s) * self.rate)
                    state.refilled_s = now
                    if state.tokens >= 1.0:
                        state.tokens -= 1.0
                        item = state.pop(max(state.ranks))
                    else:
                        wait_s = min(wait_s, (1.0 - state.tokens) / self.rate)
                if len(state):
                    self._turn.append(sender)
                if item is not None:
                    return item, 0.0
            return None, wait_s

    def confirm(self, sender: Hashable, sweep: Sweep) -> int:
        """A slice of ``sweep`` from ``sender`` was accepted: its queued and later slices go
        first. Returns how many queued messages the move pushed out of a full ``known`` queue."""
        with self._lock:
            state = self._senders.get(sender)
            if state is None or sweep in state.confirmed:
                return 0
            state.confirmed.append(sweep)
            moving = state.remove(sweep)
            dropped = max(0, len(state.known) + len(moving) - self.depth)
            state.known.extend(moving)
            for _ in range(dropped):
                state.known.popleft()
            return dropped

    def refuse(self, sender: Hashable, sweep: Sweep) -> None:
        """A slice of ``sweep`` from ``sender`` was refused after ``take``: its group ranks last."""
        with self._lock:
            state = self._senders.get(sender)
            if state is not None:
                state.refuse(sweep)

    def __len__(self) -> int:
        """Messages waiting, all senders together."""
        with self._lock:
            return sum(len(s) for s in self._senders.values())
