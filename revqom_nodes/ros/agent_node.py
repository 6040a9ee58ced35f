"""``agent_node``: one agent's LiDAR sweeps -> EncodedBEV messages (the encoder side of V2X).

Subscribes to a PointCloud2 topic (sensor-data QoS) and, unless a static pose is given, to
the agent's PoseStamped topic; publishes EncodedBEV (best effort, keep last 1) and an
AgentStatus per sweep. Callbacks only queue; a worker thread (``ros/worker.py``) pairs each
sweep with its pose and encodes it, so pose reception never waits on inference. With
``security.trust_dir``, every slice is signed with the agent's key (docs/security.md). A bad
cloud (wrong fields, truncated data), a missing pose or a failed encoding is logged
(rate-limited), counted in ``frames_failed`` and skipped: the node keeps running.

Parameters: see ``config/agent.param.yaml`` and the node tables in README.md.
"""

from __future__ import annotations

import math
import time
from collections import deque

from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from revqom.msg import AgentStatus, EncodedBEV
from sensor_msgs.msg import PointCloud2

from revqom_nodes.process import configure_process
from revqom_nodes.ros.conversions import (
    cloud_to_points,
    pose_stamped_to_matrix,
    slice_to_encoded_bev,
    stamp_to_ns,
)
from revqom_nodes.ros.lifecycle import exit_process, run_node
from revqom_nodes.ros.parameters import declare_parameters
from revqom_nodes.ros.qos import ENCODED_BEV_QOS, POSE_QOS, RESULT_QOS, SENSOR_QOS
from revqom_nodes.ros.worker import Worker
from revqom_nodes.runtime.encoder import AgentEncoder, parse_encoding
from revqom_nodes.runtime.errors import RuntimeConfigError
from revqom_nodes.runtime.latency import RateLimiter
from revqom_nodes.runtime.model import load_runtime_model
from revqom_nodes.runtime.poses import PoseBuffer, static_pose
from revqom_nodes.runtime.security import load_signer

ROLES = {"vehicle": EncodedBEV.ROLE_VEHICLE, "infrastructure": EncodedBEV.ROLE_INFRASTRUCTURE}
QUEUE_DEPTH = 4  # sweeps waiting for the encoder; older ones are dropped (and counted) beyond this
LOG_INTERVAL_S = 5.0


class AgentNode(Node):
    """Encodes every sweep of one agent with the model file's backbone and codec."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__("agent_node", **kwargs)
        params = declare_parameters(self, "agent")
        role = params["agent.role"]
        slice_bytes, interleave = params["output.slice_bytes"], params["output.interleave"]
        if role not in ROLES:
            raise RuntimeConfigError(f"agent.role must be one of {list(ROLES)}, got {role!r}")
        if not params["model.path"]:
            raise RuntimeConfigError("parameter model.path is required")
        configure_process(params["torch.num_threads"])
        self.agent_id: str = params["agent.id"]
        self.role = ROLES[role]
        self.model = load_runtime_model(params["model.path"], params["device"])
        self.encoder = AgentEncoder(
            self.model, parse_encoding(params["codec.encoding"]), slice_bytes, interleave
        )
        self.encoder.warm_up()  # before subscribing: once the replay sees the node, it encodes at speed
        trust_dir = params["security.trust_dir"]
        self.signer = load_signer(trust_dir, agent_id=self.agent_id, role=self.role) if trust_dir else None
        self.static_pose = static_pose(params["pose.static"])
        self.poses = PoseBuffer(max_age_ms=params["pose.max_age_ms"])
        self.pose_wait_s = params["pose.wait_ms"] / 1e3
        self.sequence = 0
        self.frames_encoded = 0
        self.frames_failed = 0
        self.limiter = RateLimiter(LOG_INTERVAL_S)
        self._queue: deque[PointCloud2] = deque()
        self._head_deadline: float | None = None  # when the oldest queued sweep stops waiting for its pose

        # Subscriptions first: once the publishers are visible the node is ready (the replay waits for them).
        input_topic, pose_topic = params["input.topic"], params["pose.topic"]
        if self.static_pose is None:
            self.create_subscription(PoseStamped, pose_topic, self._on_pose, POSE_QOS)
        self.create_subscription(PointCloud2, input_topic, self._on_cloud, SENSOR_QOS)
        self.encoded_pub = self.create_publisher(EncodedBEV, params["output.topic"], ENCODED_BEV_QOS)
        self.status_pub = self.create_publisher(AgentStatus, params["output.status_topic"], RESULT_QOS)
        self.worker = Worker(self, "encoder", self._next_sweep, self._encode)
        self.get_logger().info(
            f"agent {self.agent_id} ({role}) on {self.model.device}: {self.encoded_pub.topic_name} "
            f"<- {self.resolve_topic_name(input_topic)}, pose "
            f"{'static' if self.static_pose is not None else self.resolve_topic_name(pose_topic)}, "
            f"{self.encoder.encoding.name.lower()} payloads"
            f"{f' in slices of <= {slice_bytes} B, interleave {interleave}' if slice_bytes else ''}, "
            f"codebook {self.model.codebook_id[:12]}, "
            f"{f'signed ({trust_dir})' if self.signer is not None else 'unsigned'}"
        )

    # ---- callbacks (reception only) -----------------------------------------------------
    def _on_pose(self, msg: PoseStamped) -> None:
        stamp_ns, T = pose_stamped_to_matrix(msg)
        self.poses.add(stamp_ns, T)
        self.worker.wake()

    def _on_cloud(self, msg: PointCloud2) -> None:
        with self.worker.lock:
            if len(self._queue) >= QUEUE_DEPTH:
                self._queue.popleft()
                self._head_deadline = None
                self._fail("overloaded", "encoder is behind: dropped the oldest queued sweep")
            self._queue.append(msg)
        self.worker.wake()

    # ---- worker -------------------------------------------------------------------------
    def _next_sweep(self) -> tuple[PointCloud2 | None, float]:
        """The oldest sweep once its pose is in (or it waited ``pose.wait_ms``); else how long to wait, s."""
        if not self._queue:
            return None, math.inf
        if self.static_pose is None and not self.poses.settled(stamp_to_ns(self._queue[0].header.stamp)):
            if self._head_deadline is None:
                self._head_deadline = time.monotonic() + self.pose_wait_s
            remaining = self._head_deadline - time.monotonic()
            if remaining > 0:
                return None, remaining
        self._head_deadline = None
        return self._queue.popleft(), 0.0

    def _encode(self, msg: PointCloud2) -> None:
        stamp_ns = stamp_to_ns(msg.header.stamp)
        T = self.static_pose if self.static_pose is not None else self.poses.lookup(stamp_ns)
        if T is None:
            self._fail(
                "no_pose", f"no pose at or up to {self.poses.max_age_ns / 1e6:g} ms before sweep {stamp_ns}"
            )
            return
        try:
            points = cloud_to_points(msg)
            sweep = self.encoder.encode(points)
            messages = self.encoder.messages(
                sweep.slices,
                agent_id=self.agent_id,
                T_world_from_lidar=T,
                stamp_ns=stamp_ns,
                sequence=self.sequence + 1,
                role=self.role,
                frame_id=msg.header.frame_id,
                signer=self.signer,
            )
        except Exception as exc:  # a bad cloud must not end the node, whatever its defect
            self._fail(type(exc).__name__, f"sweep {stamp_ns} skipped: {exc}")
            return
        self.sequence += 1
        for message in messages:  # back to back: the receiver relies on it
            self.encoded_pub.publish(slice_to_encoded_bev(message))
        self.frames_encoded += 1
        encoding = max(int(s.encoding) for s in sweep.slices)  # entropy-coded (1 or 2) when any slice is
        self._publish_status(msg.header, sweep.encode_ms, sweep.payload_bytes, encoding)

    def _fail(self, kind: str, detail: str) -> None:
        self.frames_failed += 1
        if self.limiter.allow(kind):
            self.get_logger().warning(f"{detail} ({self.frames_failed} failed so far)")

    def _publish_status(self, header: object, encode_ms: float, payload_bytes: int, encoding: int) -> None:
        self.status_pub.publish(
            AgentStatus(
                header=header,
                agent_id=self.agent_id,
                frames_encoded=self.frames_encoded,
                frames_failed=self.frames_failed,
                encode_ms=encode_ms,
                payload_bytes=payload_bytes,
                encoding=encoding,
            )
        )

    def destroy_node(self) -> None:
        self.worker.stop()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    return run_node(AgentNode, "agent_node", args)


if __name__ == "__main__":
    exit_process(main())
