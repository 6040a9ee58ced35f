"""``agent_node``: one agent's LiDAR sweeps -> EncodedBEV messages (the encoder side of V2X).

Subscribes to a PointCloud2 topic (sensor-data QoS) and, unless a static pose is given, to
the agent's PoseStamped topic; publishes EncodedBEV (best effort, keep last 1) and an
AgentStatus per sweep. Callbacks only queue; a worker thread pairs each sweep with its pose
and encodes it, so pose reception never waits on inference. A bad cloud (wrong fields,
truncated data), a missing pose or a failed encoding is logged (rate-limited), counted in
``frames_failed`` and skipped: the node keeps running.

Parameters: see ``config/agent.param.yaml`` and the node tables in README.md.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque

import numpy as np
import torch
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from revqom.msg import AgentStatus, EncodedBEV
from sensor_msgs.msg import PointCloud2

from revqom_nodes.ros.conversions import (
    cloud_to_points,
    make_encoded_bev,
    pose_stamped_to_matrix,
    stamp_to_ns,
)
from revqom_nodes.ros.lifecycle import run_node
from revqom_nodes.ros.parameters import declare
from revqom_nodes.ros.qos import ENCODED_BEV_QOS, POSE_QOS, RESULT_QOS, SENSOR_QOS
from revqom_nodes.runtime.encoder import AgentEncoder, parse_encoding
from revqom_nodes.runtime.errors import RuntimeConfigError
from revqom_nodes.runtime.latency import RateLimiter
from revqom_nodes.runtime.model import load_runtime_model
from revqom_nodes.runtime.poses import PoseBuffer

ROLES = {"vehicle": EncodedBEV.ROLE_VEHICLE, "infrastructure": EncodedBEV.ROLE_INFRASTRUCTURE}
QUEUE_DEPTH = 4  # sweeps waiting for the encoder; older ones are dropped (and counted) beyond this
LOG_INTERVAL_S = 5.0


class AgentNode(Node):
    """Encodes every sweep of one agent with the model file's backbone and codec."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__("agent_node", **kwargs)
        model_path = declare(self, "model.path", "", "model file (.pt)")
        self.agent_id = declare(self, "agent.id", "vehicle", "agent id sent in every message")
        role = declare(self, "agent.role", "vehicle", "vehicle or infrastructure")
        device = declare(self, "device", "auto", "auto, cpu or cuda[:N]")
        encoding = declare(self, "codec.encoding", "packed", "packed or entropy")
        threads = declare(self, "torch.num_threads", 0, "PyTorch CPU threads; 0 keeps its default")
        input_topic = declare(self, "input.topic", "lidar/points", "PointCloud2 input")
        pose_topic = declare(self, "pose.topic", "pose", "PoseStamped T_world_from_lidar of the sweeps")
        static_pose = declare(
            self, "pose.static", [], "16 floats, row-major T_world_from_lidar; replaces pose.topic"
        )
        pose_wait_ms = declare(self, "pose.wait_ms", 100.0, "how long a sweep waits for its pose, ms")
        pose_max_age_ms = declare(self, "pose.max_age_ms", 200.0, "oldest usable pose before a sweep, ms")
        output_topic = declare(self, "output.topic", "encoded_bev", "EncodedBEV output")
        slice_bytes = declare(
            self, "output.slice_bytes", 1100,
            "largest payload of one message, bytes (1100: one IP packet per slice); 0: the whole map in one",
        )
        interleave = declare(
            self, "output.interleave", 2,
            "cell order of the slices: 1 row-major; s sends the s x s sub-grids one after another",
        )
        status_topic = declare(self, "output.status_topic", "agent_status", "AgentStatus output")

        if role not in ROLES:
            raise RuntimeConfigError(f"agent.role must be one of {list(ROLES)}, got {role!r}")
        if not model_path:
            raise RuntimeConfigError("parameter model.path is required")
        if threads > 0:
            torch.set_num_threads(threads)
        self.role = ROLES[role]
        self.model = load_runtime_model(model_path, device)
        self.encoder = AgentEncoder(self.model, parse_encoding(encoding), slice_bytes, interleave)
        self.static_pose = self._static_pose(static_pose)
        self.poses = PoseBuffer(max_age_ms=pose_max_age_ms)
        self.pose_wait_s = pose_wait_ms / 1e3
        self.sequence = 0
        self.frames_encoded = 0
        self.frames_failed = 0
        self.limiter = RateLimiter(LOG_INTERVAL_S)
        self._queue: deque[PointCloud2] = deque()
        self._wake = threading.Condition()
        self._stopping = False

        # Subscriptions first: once the publishers are visible the node is ready (the replay waits for them).
        if self.static_pose is None:
            self.create_subscription(PoseStamped, pose_topic, self._on_pose, POSE_QOS)
        self.create_subscription(PointCloud2, input_topic, self._on_cloud, SENSOR_QOS)
        self.encoded_pub = self.create_publisher(EncodedBEV, output_topic, ENCODED_BEV_QOS)
        self.status_pub = self.create_publisher(AgentStatus, status_topic, RESULT_QOS)
        self._worker = threading.Thread(target=self._work, name="encoder", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"agent {self.agent_id} ({role}) on {self.model.device}: {self.encoded_pub.topic_name} "
            f"<- {self.resolve_topic_name(input_topic)}, pose "
            f"{'static' if self.static_pose is not None else self.resolve_topic_name(pose_topic)}, "
            f"{self.encoder.encoding.name.lower()} payloads"
            f"{f' in slices of <= {slice_bytes} B, interleave {interleave}' if slice_bytes else ''}, "
            f"codebook {self.model.codebook_id[:12]}"
        )

    @staticmethod
    def _static_pose(values: list[float]) -> np.ndarray | None:
        if not values:
            return None
        try:
            T = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            raise RuntimeConfigError(f"pose.static must hold 16 numbers, got {values!r}") from None
        if T.size != 16 or not np.isfinite(T).all():
            raise RuntimeConfigError(f"pose.static needs 16 finite floats (row-major 4x4), got {len(T)}")
        return T.reshape(4, 4)

    # ---- callbacks (reception only) -----------------------------------------------------
    def _on_pose(self, msg: PoseStamped) -> None:
        stamp_ns, T = pose_stamped_to_matrix(msg)
        self.poses.add(stamp_ns, T)
        with self._wake:
            self._wake.notify()

    def _on_cloud(self, msg: PointCloud2) -> None:
        with self._wake:
            if len(self._queue) >= QUEUE_DEPTH:
                self._queue.popleft()
                self._fail("overloaded", "encoder is behind: dropped the oldest queued sweep")
            self._queue.append(msg)
            self._wake.notify()

    # ---- worker -------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._stopping:
                    self._wake.wait()
                if self._stopping:
                    return
                msg = self._queue.popleft()
                stamp_ns = stamp_to_ns(msg.header.stamp)
                if self.static_pose is None:
                    deadline = time.monotonic() + self.pose_wait_s
                    while not self.poses.settled(stamp_ns) and not self._stopping:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        self._wake.wait(remaining)
                if self._stopping:
                    return
            self._encode(msg, stamp_ns)

    def _encode(self, msg: PointCloud2, stamp_ns: int) -> None:
        T = self.static_pose if self.static_pose is not None else self.poses.lookup(stamp_ns)
        if T is None:
            self._fail(
                "no_pose", f"no pose at or up to {self.poses.max_age_ns / 1e6:g} ms before sweep {stamp_ns}"
            )
            return
        try:
            points = cloud_to_points(msg)
            sweep = self.encoder.encode(points)
        except Exception as exc:  # a bad cloud must not end the node, whatever its defect
            self._fail(type(exc).__name__, f"sweep {stamp_ns} skipped: {exc}")
            return
        self.sequence += 1
        for slice_index in range(len(sweep.slices)):  # back to back: the receiver relies on it
            self.encoded_pub.publish(
                make_encoded_bev(
                    sweep,
                    self.model,
                    agent_id=self.agent_id,
                    role=self.role,
                    sequence=self.sequence,
                    header=msg.header,
                    T_world_from_lidar=T,
                    slice_index=slice_index,
                )
            )
        self.frames_encoded += 1
        encoding = max(int(s.encoding) for s in sweep.slices)  # ENTROPY when any slice is
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
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        self._worker.join(timeout=5.0)
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    return run_node(AgentNode, "agent_node", args)


if __name__ == "__main__":
    sys.exit(main())
