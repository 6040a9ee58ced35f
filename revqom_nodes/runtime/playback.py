"""Reading a bag for replay (rosbags, raw CDR bytes) and pacing it in wall-clock time.

``iter_bag`` streams ``(topic, type, bag time ns, serialized bytes)`` in bag-time order;
``delayed`` holds some of a time-ordered stream back (a partner's transport delay);
``Pacer`` maps bag time to wall time with a rate factor (2.0 plays twice as fast).
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import NamedTuple, TypeVar

from revqom_nodes.runtime.errors import RuntimeConfigError

NS_PER_S = 1_000_000_000
Item = TypeVar("Item")


class BagMessage(NamedTuple):
    topic: str
    msgtype: str  # "sensor_msgs/msg/PointCloud2"
    bag_ns: int  # the bag's receive time (the converter writes the sweep stamp)
    raw: bytes  # CDR, as rclpy publishes and receives serialized messages


class BagInfo(NamedTuple):
    start_ns: int
    end_ns: int
    message_count: int
    topics: dict[str, str]  # topic -> type
    period_ns: int  # message period of a typical topic (median message count; 0: one message each)


def bag_info(path: str | Path) -> BagInfo:
    """Time span, message count and topics of a rosbag2 folder; RuntimeConfigError if unreadable."""
    from rosbags.rosbag2 import Reader

    try:
        with Reader(path) as reader:
            topics = {c.topic: c.msgtype for c in reader.connections}
            counts = sorted(c.msgcount for c in reader.connections)
            typical = counts[len(counts) // 2] if counts else 0  # messages per topic, most topics
            period_ns = (reader.end_time - reader.start_time) // (typical - 1) if typical > 1 else 0
            return BagInfo(reader.start_time, reader.end_time, reader.message_count, topics, period_ns)
    except Exception as exc:  # rosbags raises several types for missing or corrupt bags
        raise RuntimeConfigError(f"cannot read bag {path}: {exc}") from exc


def iter_bag(path: str | Path, start_offset_s: float = 0.0) -> Iterator[BagMessage]:
    """Messages from ``start_offset_s`` seconds after the bag's first message, in time order."""
    from rosbags.rosbag2 import Reader

    if start_offset_s < 0:
        raise RuntimeConfigError(f"start offset must be >= 0 s, got {start_offset_s}")
    try:
        reader = Reader(path)
        reader.open()
    except Exception as exc:
        raise RuntimeConfigError(f"cannot read bag {path}: {exc}") from exc
    try:
        start = reader.start_time + int(start_offset_s * NS_PER_S)
        for connection, bag_ns, raw in reader.messages(start=start):
            yield BagMessage(connection.topic, connection.msgtype, int(bag_ns), bytes(raw))
    finally:
        reader.close()


def delayed(
    timeline: Iterable[tuple[int, Item]], delay_ns: Callable[[Item], int]
) -> Iterator[tuple[int, Item]]:
    """(due ns, item) in due order -> every item ``delay_ns(item)`` (>= 0) later, in the new due
    order (equal due times keep the input's order). Lazy: an item comes out as soon as no later
    input can come before it, so at most the items of one delay are held."""
    held: list[tuple[int, int, Item]] = []  # (new due ns, input position, item): a heap
    for position, (due_ns, item) in enumerate(timeline):
        extra = delay_ns(item)
        if extra < 0:
            raise RuntimeConfigError(f"a delay must be >= 0 ns, got {extra}")
        heapq.heappush(held, (due_ns + extra, position, item))
        while held and held[0][0] <= due_ns:  # every later input is due at due_ns or after
            new_due, _, out = heapq.heappop(held)
            yield new_due, out
    while held:
        new_due, _, out = heapq.heappop(held)
        yield new_due, out


class Pacer:
    """Bag time -> wall time: ``bag_ns`` is due ``(bag_ns - origin) / rate`` seconds after ``start``."""

    def __init__(self, rate: float, clock_s: Callable[[], float] = time.monotonic) -> None:
        if not rate > 0:
            raise RuntimeConfigError(f"replay rate must be > 0, got {rate}")
        self.rate = float(rate)
        self._clock_s = clock_s
        self._origin_bag_ns: int | None = None
        self._origin_wall_s = 0.0

    def start(self, bag_ns: int) -> None:
        """Make ``bag_ns`` due now (call at the first message)."""
        self._origin_bag_ns = bag_ns
        self._origin_wall_s = self._clock_s()

    def seconds_until(self, bag_ns: int) -> float:
        """Wall seconds until ``bag_ns`` is due (<= 0: due now)."""
        if self._origin_bag_ns is None:
            raise RuntimeConfigError("Pacer.start() was not called")
        due = self._origin_wall_s + (bag_ns - self._origin_bag_ns) / NS_PER_S / self.rate
        return due - self._clock_s()

    def bag_now_ns(self) -> int:
        """The bag time that is due now."""
        if self._origin_bag_ns is None:
            raise RuntimeConfigError("Pacer.start() was not called")
        return self._origin_bag_ns + int((self._clock_s() - self._origin_wall_s) * self.rate * NS_PER_S)
