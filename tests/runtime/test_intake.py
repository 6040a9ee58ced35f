"""Flood resistance without ROS: the intake queues' bounds, fairness and priority
(``Inbox.screen``, which rejects replays before any signature is verified, is tested in
test_security.py)."""

from __future__ import annotations

import math

import pytest

from revqom_nodes.runtime.errors import RuntimeConfigError
from revqom_nodes.runtime.intake import Intake
from tests.runtime.test_security import T0

LEGIT = (T0, 1)  # (stamp, sequence) of a legit sweep
UNLIMITED = 1e9  # new-sweep slices per second: no token ever lacks


def take(intake: Intake):
    """The item ``Intake.take`` hands out, or None."""
    return intake.take()[0]


def drain(intake: Intake) -> list:
    items = []
    while (item := take(intake)) is not None:
        items.append(item)
    return items


def test_queues_are_bounded_and_drop_their_oldest() -> None:
    intake: Intake[int] = Intake(depth=8, new_sweep_slices_per_s=UNLIMITED)
    dropped = [intake.offer("flooder", (k, 0), k).dropped for k in range(100)]
    assert sum(dropped) == 92 and dropped[:8] == [0] * 8 and len(intake) == 8
    assert drain(intake) == list(range(92, 100))  # the newest, in order
    assert take(intake) is None and len(intake) == 0
    with pytest.raises(RuntimeConfigError):
        Intake(depth=0, new_sweep_slices_per_s=UNLIMITED)
    with pytest.raises(RuntimeConfigError):
        Intake(depth=8, new_sweep_slices_per_s=0.0)


def test_a_flooding_sender_cannot_starve_the_others() -> None:
    intake: Intake[str] = Intake(depth=16, new_sweep_slices_per_s=UNLIMITED)
    for k in range(1000):
        intake.offer(("infrastructure", b"forged"), (k, 0), "forged")
        if k % 300 == 0:
            intake.offer(("vehicle", b"ego"), (k, 0), "ego")
    taken = [take(intake) for _ in range(8)]
    assert taken.count("ego") == 4 == taken[::2].count("ego") + taken[1::2].count("ego")  # every other
    assert "ego" not in drain(intake)
    assert len(intake) == 0


def test_a_confirmed_sweep_goes_before_the_flood_of_its_sender() -> None:
    """Forged slices carrying the legit signer's digest share its queue; once one slice of the
    legit sweep verifies, its siblings already queued and those to come are served first."""
    sender = ("infrastructure", b"digest")
    intake: Intake[str] = Intake(depth=64, new_sweep_slices_per_s=UNLIMITED)
    for k in range(40):
        intake.offer(sender, (T0 + 1000 + k, 9), "forged")
        if k % 10 == 0:
            intake.offer(sender, LEGIT, "legit")
    assert intake.confirm(sender, LEGIT) == 0
    assert intake.confirm(sender, LEGIT) == 0  # once is enough
    intake.offer(sender, LEGIT, "legit")
    assert [take(intake) for _ in range(5)] == ["legit"] * 5
    assert set(drain(intake)) == {"forged"}
    assert intake.confirm(("unknown", b""), LEGIT) == 0


def test_a_legit_burst_is_verified_before_a_flood_of_single_forgeries() -> None:
    """Forgeries stamped one by one form groups of one; the legit sweep's slices share a stamp,
    so the worker takes them first and the full queue pushes forgeries out, not them."""
    sender = ("infrastructure", b"digest")
    intake: Intake[str] = Intake(depth=32, new_sweep_slices_per_s=UNLIMITED)
    dropped = 0
    for k in range(500):
        dropped += intake.offer(sender, (T0 + 1000 + k, 9), "forged").dropped
        if 200 <= k < 211:
            dropped += intake.offer(sender, LEGIT, f"legit{k - 200}").dropped
    assert dropped == 500 + 11 - 32 and len(intake) == 32
    assert take(intake) == "legit0"
    intake.confirm(sender, LEGIT)  # legit0 verified: its siblings follow
    assert [take(intake) for _ in range(10)] == [f"legit{i}" for i in range(1, 11)]
    assert set(drain(intake)) == {"forged"}


def test_a_refused_group_ranks_last() -> None:
    """A forger who stamps many slices alike gets one verification before the legit sweep."""
    sender = ("infrastructure", b"digest")
    intake: Intake[str] = Intake(depth=64, new_sweep_slices_per_s=UNLIMITED)
    fake = (T0 + 5000, 3)
    for _ in range(20):
        intake.offer(sender, fake, "forged")
    for i in range(3):
        intake.offer(sender, LEGIT, f"legit{i}")
    assert take(intake) == "forged"  # the biggest group goes first...
    intake.refuse(sender, fake)  # ...its slice failed verification
    assert [take(intake) for _ in range(3)] == ["legit0", "legit1", "legit2"]
    intake.offer(sender, fake, "forged")  # still last, however big it grows
    intake.offer(sender, (T0 + 6000, 4), "single")
    assert take(intake) == "single"
    assert set(drain(intake)) == {"forged"}
    intake.refuse(sender, (T0, 99))  # nothing queued for it: no effect
    intake.refuse(("unknown", b""), fake)


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def test_slices_of_unverified_sweeps_are_taken_at_a_bounded_rate() -> None:
    """A flood of slices stamped anew costs at most ``new_sweep_slices_per_s`` verifications a
    second per sender; a confirmed sweep's slices and other senders' need no token, and the
    worker is told how long to wait for the next; an offer says whether the worker must look
    again: not while the sender's earlier slices wait for a token (the timed wait covers that),
    but when the sender had nothing queued, whose next token no wait counts."""
    clock = FakeClock()
    sender, ego = ("infrastructure", b"digest"), ("vehicle", b"ego")
    intake: Intake[str] = Intake(depth=256, new_sweep_slices_per_s=8.0, clock=clock)
    for k in range(100):
        assert intake.offer(sender, (T0 + 1000 + k, 9), "forged").wake
    assert [take(intake) for _ in range(8)] == ["forged"] * 8  # a second's worth at once
    item, wait_s = intake.take()
    assert item is None and wait_s == pytest.approx(0.125)
    assert intake.offer(ego, LEGIT, "ego").wake  # another sender has its own tokens
    assert intake.take() == ("ego", 0.0)
    assert not any(intake.offer(sender, LEGIT, f"legit{i}").wake for i in range(3))
    clock.now_s += 0.125  # one token: the biggest group's oldest slice
    assert take(intake) == "legit0" and take(intake) is None
    intake.confirm(sender, LEGIT)  # its siblings need no token
    assert intake.offer(sender, LEGIT, "legit3") == (0, True)
    assert [take(intake) for _ in range(4)] == ["legit1", "legit2", "legit3", None]
    clock.now_s += 60.0  # tokens refill up to one second's worth
    assert [take(intake) for _ in range(9)] == ["forged"] * 8 + [None]
    # A sender out of tokens whose queue ran empty (the clock stands still: no token comes back)
    lone: Intake[str] = Intake(depth=8, new_sweep_slices_per_s=1.0, clock=FakeClock())
    assert lone.offer(sender, LEGIT, "first").wake and take(lone) == "first"
    assert lone.take() == (None, math.inf)  # nothing queued: the worker's wait is unbounded...
    assert lone.offer(sender, (T0 + 1, 1), "next").wake  # ...so a slice needing a token wakes it
    assert lone.take() == (None, pytest.approx(1.0))  # to learn when the token comes
    assert not lone.offer(sender, (T0 + 2, 2), "later").wake  # that timed wait covers this one
