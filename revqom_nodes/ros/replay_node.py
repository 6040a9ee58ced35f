"""``replay_node``: plays a bag from ``revqom data to-bag`` with its original timing.

Publishes every topic of the bag (point clouds, poses, ``/tf``, ground truth, frame info),
or only those listed in ``replay.topics``, as the serialized bytes stored in it (no
re-serialization), paced by ``replay.rate`` on the whole bag's timeline (so that two replays of
one bag with different topics, started together, stay in step), plus
``/clock`` (for ``use_sim_time``) and the ground truth as a MarkerArray on
``/ground_truth/markers`` for RViz. ``/tf`` needs ``tf2_msgs``, which has no PyPI wheel:
on a pip-only install it is skipped with one log line. Before the first message it waits
until every topic in ``replay.wait_for_publishers`` has a publisher and every topic in
``replay.wait_for_subscribers`` a subscriber (the runtime nodes create theirs once their
model is loaded), at most ``replay.wait_timeout_s``. At the end of the bag, after
``replay.exit_delay_s`` (time for the last frames to get through), it exits with status 0
(a launch file can end the launch on its exit), unless ``replay.loop``.
"""

from __future__ import annotations

import importlib
import sys
import threading
import time

from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.serialization import deserialize_message
from rclpy.task import Future
from revqom.msg import Detection3DArray
from rosgraph_msgs.msg import Clock
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import MarkerArray

from revqom_nodes.ros.conversions import boxes_to_markers, msg_to_boxes, ns_to_stamp
from revqom_nodes.ros.lifecycle import run_node
from revqom_nodes.ros.parameters import declare
from revqom_nodes.ros.qos import CLOCK_QOS, MARKER_QOS, POSE_QOS, RESULT_QOS, SENSOR_QOS
from revqom_nodes.runtime.errors import RuntimeConfigError
from revqom_nodes.runtime.playback import Pacer, bag_info, iter_bag

MESSAGE_MODULES = {  # bag type -> (Python module, class); other types in a bag are not replayed
    "sensor_msgs/msg/PointCloud2": ("sensor_msgs.msg", "PointCloud2"),
    "geometry_msgs/msg/PoseStamped": ("geometry_msgs.msg", "PoseStamped"),
    "tf2_msgs/msg/TFMessage": ("tf2_msgs.msg", "TFMessage"),
    "revqom/msg/Detection3DArray": ("revqom.msg", "Detection3DArray"),
    "revqom/msg/CooperativeFrameInfo": ("revqom.msg", "CooperativeFrameInfo"),
}
QOS_BY_TYPE = {"sensor_msgs/msg/PointCloud2": SENSOR_QOS, "geometry_msgs/msg/PoseStamped": POSE_QOS}
GROUND_TRUTH_TOPIC = "/ground_truth/boxes"
GROUND_TRUTH_MARKERS_TOPIC = "/ground_truth/markers"
GROUND_TRUTH_COLOR = ColorRGBA(r=0.2, g=0.5, b=1.0, a=0.9)
CLOCK_PERIOD_S = 0.05  # /clock between messages, in wall time
SETTLE_S = 0.5  # after every awaited subscriber is seen, let discovery match the endpoints


def select_topics(available: dict[str, str], wanted: list[str]) -> dict[str, str]:
    """The bag's topics (topic -> type) to publish: ``wanted`` ones, every one when it is empty.

    A wanted topic that the bag does not have raises ``RuntimeConfigError``.
    """
    missing = sorted(set(wanted) - set(available))
    if missing:
        raise RuntimeConfigError(
            f"replay.topics {missing} not in the bag (its topics: {', '.join(sorted(available))})"
        )
    return {t: m for t, m in available.items() if not wanted or t in wanted}


class ReplayNode(Node):
    """Publishes a bag's messages in real time scaled by a rate; ``done`` completes at the end."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__("replay_node", **kwargs)
        self.bag = declare(self, "bag.path", "", "rosbag2 folder to play")
        self.rate = declare(self, "replay.rate", 1.0, "playback speed factor")
        self.loop = declare(self, "replay.loop", False, "start over at the end of the bag")
        self.start_offset_s = declare(self, "replay.start_offset_s", 0.0, "skip this much of the bag, s")
        wanted = declare(self, "replay.topics", [], "bag topics to publish (empty: every topic)")
        self.wait_for = {
            "publisher": declare(
                self, "replay.wait_for_publishers", [], "topics that need a publisher before playing starts"
            ),
            "subscriber": declare(
                self, "replay.wait_for_subscribers", [], "topics that need a subscriber before playing starts"
            ),
        }
        self.exit_delay_s = declare(
            self,
            "replay.exit_delay_s",
            0.0,
            "stay up this long after the last message (downstream nodes finish)",
        )
        self.wait_timeout_s = declare(
            self, "replay.wait_timeout_s", 120.0, "stop waiting for subscribers after, s"
        )
        if not self.bag:
            raise RuntimeConfigError("parameter bag.path is required")
        info = bag_info(self.bag)
        self.pacer = Pacer(self.rate)
        self.clock_pub = self.create_publisher(Clock, "/clock", CLOCK_QOS)
        self.markers_pub = self.create_publisher(MarkerArray, GROUND_TRUTH_MARKERS_TOPIC, MARKER_QOS)
        self.publishers_by_topic = {}
        for topic, msgtype in sorted(select_topics(info.topics, wanted).items()):
            cls = self._message_class(msgtype)
            if cls is None:
                self.get_logger().warning(
                    f"{topic} ({msgtype}) is not replayed: no Python type for it here "
                    "(tf2_msgs has no PyPI wheel; a full ROS 2 install has it)"
                )
                continue
            self.publishers_by_topic[topic] = self.create_publisher(
                cls, topic, QOS_BY_TYPE.get(msgtype, RESULT_QOS)
            )
        self.done: Future = Future()
        self.frames_played = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="replay", daemon=True)
        self.get_logger().info(
            f"replaying {self.bag}: {info.message_count} messages over "
            f"{(info.end_ns - info.start_ns) / 1e9:.1f} s "
            f"at rate {self.rate:g}{' (loop)' if self.loop else ''}, {len(self.publishers_by_topic)} topics"
        )
        self._thread.start()

    @staticmethod
    def _message_class(msgtype: str) -> type | None:
        if msgtype not in MESSAGE_MODULES:
            return None
        module, name = MESSAGE_MODULES[msgtype]
        try:
            return getattr(importlib.import_module(module), name)
        except ImportError:
            return None

    def _run(self) -> None:
        try:
            self._wait_for_endpoints()
            while not self._stop.is_set():
                self._play_once()
                if not self.loop:
                    break
            self.get_logger().info(f"end of bag: {self.frames_played} ground-truth frames played")
            self._stop.wait(self.exit_delay_s)
        except RuntimeConfigError as exc:
            self.get_logger().error(str(exc))
            self.done.set_exception(exc)
            return
        self.done.set_result(self.frames_played)

    def _wait_for_endpoints(self) -> None:
        counters = {"publisher": self.count_publishers, "subscriber": self.count_subscribers}
        awaited = [(kind, topic) for kind, topics in self.wait_for.items() for topic in topics]
        deadline = time.monotonic() + self.wait_timeout_s
        while awaited and not self._stop.is_set():
            missing = [f"{kind} on {topic}" for kind, topic in awaited if counters[kind](topic) == 0]
            if not missing:
                self._stop.wait(SETTLE_S)
                return
            if time.monotonic() > deadline:
                self.get_logger().warning(
                    f"still no {', '.join(missing)} after {self.wait_timeout_s:g} s: playing anyway"
                )
                return
            self._stop.wait(0.1)

    def _play_once(self) -> None:
        started = False
        for message in iter_bag(self.bag, self.start_offset_s):
            if not started:
                self.pacer.start(message.bag_ns)
                started = True
            while (remaining := self.pacer.seconds_until(message.bag_ns)) > 0:
                if self._stop.wait(min(remaining, CLOCK_PERIOD_S)):
                    return
                self.clock_pub.publish(Clock(clock=ns_to_stamp(min(self.pacer.bag_now_ns(), message.bag_ns))))
            if self._stop.is_set():
                return
            self.clock_pub.publish(Clock(clock=ns_to_stamp(message.bag_ns)))
            publisher = self.publishers_by_topic.get(message.topic)
            if publisher is not None:
                publisher.publish(message.raw)
            if publisher is not None and message.topic == GROUND_TRUTH_TOPIC:
                self._publish_ground_truth_markers(message.raw)

    def _publish_ground_truth_markers(self, raw: bytes) -> None:
        msg = deserialize_message(raw, Detection3DArray)
        boxes, _ = msg_to_boxes(msg)
        self.markers_pub.publish(
            boxes_to_markers(boxes, None, msg.header, "ground_truth", color=GROUND_TRUTH_COLOR)
        )
        self.frames_played += 1

    def destroy_node(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
        super().destroy_node()


def _spin_until_bag_ends(node: ReplayNode) -> int:
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    executor.spin_until_future_complete(node.done)
    return 0 if node.done.done() and node.done.exception() is None else 1


def main(args: list[str] | None = None) -> int:
    return run_node(ReplayNode, "replay_node", args, spin=_spin_until_bag_ends)


if __name__ == "__main__":
    sys.exit(main())
