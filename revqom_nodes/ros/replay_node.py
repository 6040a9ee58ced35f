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
(a launch file can end the launch on its exit), unless ``replay.loop``: then it plays the bag
again and again, each pass stamped (headers, ``/clock``) one bag length plus one message period
after the previous one, as a recording played again would be, so that time goes forward.

Partners under V2X conditions (the partners: every agent of the bag but the first, the ego of
its ``agents.launch.xml`` and of ``revqom eval``): ``replay.partner_delay_ms`` publishes their
clouds and poses that much bag time late, stamps unchanged (a transport delay; ``/clock`` and
every other topic keep time); ``replay.pose_noise`` noises the poses they publish with the draw
``revqom eval --pose-noise`` makes for the same frame (``data.perturbation``; ``/tf`` stays
exact, for RViz).
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Iterator
from typing import Any, NamedTuple

from geometry_msgs.msg import PoseStamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.publisher import Publisher
from rclpy.serialization import deserialize_message, serialize_message
from rclpy.task import Future
from revqom.msg import Detection3DArray
from rosgraph_msgs.msg import Clock
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import MarkerArray

from revqom_nodes.data.agents_launch import bag_agents
from revqom_nodes.data.bag import agent_topics, bag_frames
from revqom_nodes.data.errors import DatasetError
from revqom_nodes.data.perturbation import PartnerPoseNoise
from revqom_nodes.ros.conversions import (
    boxes_to_markers,
    matrix_to_pose,
    msg_to_boxes,
    ns_to_stamp,
    pose_stamped_to_matrix,
    shift_header_stamp,
    shift_times,
)
from revqom_nodes.ros.lifecycle import exit_process, run_node
from revqom_nodes.ros.parameters import declare_parameters
from revqom_nodes.ros.qos import CLOCK_QOS, MARKER_QOS, POSE_QOS, RESULT_QOS, SENSOR_QOS
from revqom_nodes.runtime.errors import RuntimeConfigError
from revqom_nodes.runtime.frames import NS_PER_MS
from revqom_nodes.runtime.playback import BagMessage, Pacer, bag_info, delayed, iter_bag

MESSAGE_MODULES = {  # bag type -> (Python module, class); other types in a bag are not replayed
    "sensor_msgs/msg/PointCloud2": ("sensor_msgs.msg", "PointCloud2"),
    "geometry_msgs/msg/PoseStamped": ("geometry_msgs.msg", "PoseStamped"),
    "tf2_msgs/msg/TFMessage": ("tf2_msgs.msg", "TFMessage"),
    "revqom/msg/Detection3DArray": ("revqom.msg", "Detection3DArray"),
    "revqom/msg/CooperativeFrameInfo": ("revqom.msg", "CooperativeFrameInfo"),
}
POSE_TYPE = "geometry_msgs/msg/PoseStamped"
HEADER_IS_THE_ONLY_TIME = {"sensor_msgs/msg/PointCloud2", POSE_TYPE}  # patched in place
QOS_BY_TYPE = {"sensor_msgs/msg/PointCloud2": SENSOR_QOS, POSE_TYPE: POSE_QOS}
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


class Scheduled(NamedTuple):
    """A bag message of one pass, with the offset that pass adds to its stamps."""

    offset_ns: int
    message: BagMessage


class ReplayNode(Node):
    """Publishes a bag's messages in real time scaled by a rate; ``done`` completes at the end."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__("replay_node", **kwargs)
        params = declare_parameters(self, "replay")
        self.bag: str = params["bag.path"]
        self.rate: float = params["replay.rate"]
        self.loop: bool = params["replay.loop"]
        self.start_offset_s: float = params["replay.start_offset_s"]
        self.wait_for = {
            "publisher": params["replay.wait_for_publishers"],
            "subscriber": params["replay.wait_for_subscribers"],
        }
        self.exit_delay_s: float = params["replay.exit_delay_s"]
        self.wait_timeout_s: float = params["replay.wait_timeout_s"]
        if not self.bag:
            raise RuntimeConfigError("parameter bag.path is required")
        info = bag_info(self.bag)
        self.pacer = Pacer(self.rate)
        self.clock_pub = self.create_publisher(Clock, "/clock", CLOCK_QOS)
        self.markers_pub = self.create_publisher(MarkerArray, GROUND_TRUTH_MARKERS_TOPIC, MARKER_QOS)
        self.publishers_by_topic: dict[str, Publisher] = {}
        self.classes_by_topic: dict[str, type] = {}
        self.period_ns = info.period_ns
        self.partner_delay_ns = round(params["replay.partner_delay_ms"] * NS_PER_MS)  # bag time
        self.partner_of_topic, self.pose_noise = self._partners(params)
        for topic, msgtype in sorted(select_topics(info.topics, params["replay.topics"]).items()):
            cls = self._message_class(msgtype)
            if cls is None:
                self.get_logger().warning(
                    f"{topic} ({msgtype}) is not replayed: no Python type for it here "
                    "(tf2_msgs has no PyPI wheel; a full ROS 2 install has it)"
                )
                continue
            self.classes_by_topic[topic] = cls
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
        if self.partner_of_topic:
            (xy_m, yaw_deg), seed = params["replay.pose_noise"], params["replay.noise_seed"]
            self.get_logger().info(
                f"partners {', '.join(sorted(set(self.partner_of_topic.values())))}: "
                f"{params['replay.partner_delay_ms']:g} ms late, pose noise {xy_m:g} m / {yaw_deg:g} deg "
                f"(seed {seed})"
            )
        self._thread.start()

    def _partners(self, params: dict[str, Any]) -> tuple[dict[str, str], PartnerPoseNoise | None]:
        """The partners' cloud and pose topics -> agent id (none when nothing is perturbed), and
        their pose noise (None without)."""
        delay_ms, noise = params["replay.partner_delay_ms"], params["replay.pose_noise"]
        if not delay_ms >= 0 or len(noise) != 2 or not min(noise) >= 0:
            raise RuntimeConfigError(
                f"need replay.partner_delay_ms >= 0 and replay.pose_noise [xy_m, yaw_deg] >= 0, "
                f"got {delay_ms} and {noise}"
            )
        if not delay_ms and not any(noise):
            return {}, None
        try:
            agents = bag_agents(self.bag)
            frames = bag_frames(self.bag) if any(noise) else []
        except DatasetError as exc:
            raise RuntimeConfigError(f"replay.partner_delay_ms, replay.pose_noise: {exc}") from None
        partners = {topic: agent_id for agent_id, _ in agents[1:] for topic in agent_topics(agent_id)}
        if not any(noise):
            return partners, None
        xy_m, yaw_deg = noise
        seed = params["replay.noise_seed"]
        return partners, PartnerPoseNoise(frames, xy_m=xy_m, yaw_deg=yaw_deg, noise_seed=seed)

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
            for due_ns, scheduled in delayed(self._timeline(), self._delay_ns):
                if not self._publish_when_due(due_ns, scheduled):
                    return  # stopped (Ctrl-C) before the end
            if self._stop.is_set() or not self.context.ok():
                return
            self.get_logger().info(f"end of bag: {self.frames_played} ground-truth frames played")
            self._stop.wait(self.exit_delay_s)
        except RuntimeConfigError as exc:
            self.get_logger().error(str(exc))
            self.done.set_exception(exc)
            return
        except Exception:
            if self._stop.is_set() or not self.context.ok():  # Ctrl-C mid-publish: publish nothing more
                return
            raise
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

    def _timeline(self) -> Iterator[tuple[int, Scheduled]]:
        """(due bag time ns, message) of every pass, in order; each pass after the first is stamped
        and due one bag length plus one message period after the previous one."""
        offset_ns = 0
        while not self._stop.is_set():
            first_ns = last_ns = None
            for message in iter_bag(self.bag, self.start_offset_s):
                if first_ns is None:
                    first_ns = message.bag_ns
                    if offset_ns == 0:
                        self.pacer.start(first_ns)
                last_ns = message.bag_ns
                yield message.bag_ns + offset_ns, Scheduled(offset_ns, message)
            if first_ns is None or not self.loop:
                return
            offset_ns += last_ns - first_ns + self.period_ns

    def _delay_ns(self, scheduled: Scheduled) -> int:
        """Bag time a message is held back: ``replay.partner_delay_ms`` for a partner's, else 0."""
        return self.partner_delay_ns if scheduled.message.topic in self.partner_of_topic else 0

    def _publish_when_due(self, due_ns: int, scheduled: Scheduled) -> bool:
        """Wait until ``due_ns`` (bag time; ``/clock`` ticking meanwhile), then publish; False if stopped."""
        while (remaining := self.pacer.seconds_until(due_ns)) > 0:
            if self._stop.wait(min(remaining, CLOCK_PERIOD_S)):
                return False
            self.clock_pub.publish(Clock(clock=ns_to_stamp(min(self.pacer.bag_now_ns(), due_ns))))
        if self._stop.is_set():
            return False
        self.clock_pub.publish(Clock(clock=ns_to_stamp(due_ns)))
        message = scheduled.message
        publisher = self.publishers_by_topic.get(message.topic)
        if publisher is None:
            return True
        raw = self._restamped(scheduled)
        publisher.publish(raw)
        if message.topic == GROUND_TRUTH_TOPIC:
            self._publish_ground_truth_markers(raw)
        return True

    def _restamped(self, scheduled: Scheduled) -> bytes:
        """The message as recorded, its stamps ``scheduled.offset_ns`` later (a recording played
        again), a partner's pose with its noise."""
        offset_ns, message = scheduled
        if self.pose_noise and message.msgtype == POSE_TYPE and message.topic in self.partner_of_topic:
            return self._noisy_pose(message, offset_ns)
        if offset_ns == 0:
            return message.raw
        if message.msgtype in HEADER_IS_THE_ONLY_TIME:
            return shift_header_stamp(message.raw, offset_ns)
        msg = deserialize_message(message.raw, self.classes_by_topic[message.topic])
        shift_times(msg, offset_ns)
        return serialize_message(msg)

    def _noisy_pose(self, message: BagMessage, offset_ns: int) -> bytes:
        msg = deserialize_message(message.raw, PoseStamped)
        stamp_ns, T_world_from_lidar = pose_stamped_to_matrix(msg)
        noisy = self.pose_noise.pose(self.partner_of_topic[message.topic], stamp_ns, T_world_from_lidar)
        msg.pose = matrix_to_pose(noisy)
        msg.header.stamp = ns_to_stamp(stamp_ns + offset_ns)
        return serialize_message(msg)

    def _publish_ground_truth_markers(self, raw: bytes) -> None:
        if self.markers_pub.get_subscription_count():  # markers cost milliseconds: only for a viewer
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
    exit_process(main())
