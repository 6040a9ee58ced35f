"""Replay pacing, bag streaming, pose lookup, timing summaries and the log rate limiter."""

from __future__ import annotations

import numpy as np
import pytest

from revqom_nodes.runtime.errors import RuntimeConfigError
from revqom_nodes.runtime.frames import pose_matrix
from revqom_nodes.runtime.latency import RateLimiter, summarize_ms
from revqom_nodes.runtime.playback import Pacer, bag_info, delayed, iter_bag
from revqom_nodes.runtime.poses import PoseBuffer

MS = 1_000_000


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_pacer_scales_bag_time_by_the_rate():
    clock = FakeClock()
    pacer = Pacer(0.5, clock)
    pacer.start(10_000 * MS)
    assert pacer.seconds_until(10_100 * MS) == pytest.approx(0.2)  # 100 ms of bag at half speed
    clock.now += 0.2
    assert pacer.seconds_until(10_100 * MS) == pytest.approx(0.0)
    assert pacer.bag_now_ns() == 10_100 * MS
    with pytest.raises(RuntimeConfigError):
        Pacer(0.0)


def test_delayed_holds_the_chosen_items_back_and_keeps_due_order():
    timeline = [(0, "v0"), (30, "p0"), (100, "v1"), (130, "p1"), (200, "v2"), (230, "p2"), (230, "g2")]
    late = list(delayed(timeline, lambda item: 150 if item.startswith("p") else 0))
    assert late == [(0, "v0"), (100, "v1"), (180, "p0"), (200, "v2"), (230, "g2"), (280, "p1"), (380, "p2")]
    assert list(delayed(timeline, lambda item: 0)) == timeline  # ties keep the input's order
    pulled = []

    def lazily():
        for entry in timeline:
            pulled.append(entry)
            yield entry

    stream = delayed(lazily(), lambda item: 150 if item.startswith("p") else 0)
    assert next(stream) == (0, "v0") and len(pulled) == 1  # nothing read ahead without need
    with pytest.raises(RuntimeConfigError, match=">= 0"):
        list(delayed(timeline, lambda item: -1))


def test_bag_streaming_with_offset(tmp_path):
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    String = store.types["std_msgs/msg/String"]
    path = tmp_path / "bag"
    with Writer(path, version=Writer.VERSION_LATEST) as writer:
        connection = writer.add_connection("/text", "std_msgs/msg/String", typestore=store)
        for i in range(5):
            writer.write(
                connection,
                (1000 + 100 * i) * MS,
                store.serialize_cdr(String(data=str(i)), String.__msgtype__),
            )
    info = bag_info(path)
    assert (info.start_ns, info.message_count, info.topics) == (
        1000 * MS,
        5,
        {"/text": "std_msgs/msg/String"},
    )
    messages = list(iter_bag(path, start_offset_s=0.25))
    assert [m.bag_ns for m in messages] == [1300 * MS, 1400 * MS]
    assert store.deserialize_cdr(messages[0].raw, "std_msgs/msg/String").data == "3"
    with pytest.raises(RuntimeConfigError):
        bag_info(tmp_path / "missing")


def test_pose_lookup_and_settling():
    poses = PoseBuffer(max_age_ms=150)
    for stamp_ms, x in ((1000, 1.0), (1100, 2.0)):
        T = np.eye(4)
        T[0, 3] = x
        poses.add(stamp_ms * MS, T)
    assert poses.lookup(1100 * MS)[0, 3] == 2.0
    assert poses.lookup(1099 * MS)[0, 3] == 1.0
    assert poses.lookup(999 * MS) is None
    assert poses.lookup(1300 * MS) is None  # 200 ms after the newest pose: too old
    assert poses.settled(1100 * MS) and not poses.settled(1101 * MS)
    poses.add(500 * MS, np.eye(4))  # a restart (looping replay) clears the older future
    assert poses.lookup(1100 * MS) is None


def test_pose_matrix_rejects_degenerate_quaternions():
    assert np.isnan(pose_matrix((0, 0, 0), (0, 0, 0, 0))).all()
    assert np.isnan(pose_matrix((np.nan, 0, 0), (0, 0, 0, 1))).all()
    np.testing.assert_allclose(pose_matrix((1, 2, 3), (0, 0, 0, 2))[:3, 3], (1, 2, 3))


def test_summaries_and_rate_limiter():
    summary = summarize_ms([1.0, 2.0, 3.0, float("nan")])
    assert summary["count"] == 3 and summary["p50"] == 2.0 and (summary["min"], summary["max"]) == (1.0, 3.0)
    assert summarize_ms([])["p50"] is None
    clock = FakeClock()
    limiter = RateLimiter(5.0, clock)
    assert limiter.allow("stale") and not limiter.allow("stale") and limiter.allow("bad_pose")
    clock.now += 5.0
    assert limiter.allow("stale")
    assert limiter.suppressed == {"stale": 1}
