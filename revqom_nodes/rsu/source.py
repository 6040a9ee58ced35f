"""Where a roadside unit's sweeps come from without ROS: a DAIR-V2X-C root or a bag.

Both give ``Sweep``s in time order with the recorded stamps and the unit's pose, as the agent
node gets them from a replay: from a root, the agent's sample of each frame (the project's
reader); from a bag (rosbags, no rclpy), the clouds of one topic, each with the pose of the
agent node's rule (``runtime.poses.PoseBuffer``: the newest pose at or before the sweep, at most
``max_age_ms`` older). From a root, a sweep not newer than the last one is skipped: the same
one again (DAIR-V2X-C pairs one roadside sweep with several vehicle frames) silently, an older
one with a warning (a root whose frames go back in time plays in order from its bag, which is
sorted by time). From a bag, a cloud without a pose is skipped, logged.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from revqom_nodes.data.bag import lidar_frame, project_typestore
from revqom_nodes.data.dairv2x import DairV2XReader
from revqom_nodes.data.pointcloud import cloud_data_to_xyzi
from revqom_nodes.runtime.errors import RuntimeConfigError
from revqom_nodes.runtime.frames import NS_PER_S, pose_matrix
from revqom_nodes.runtime.poses import PoseBuffer

log = logging.getLogger(__name__)


class Sweep(NamedTuple):
    stamp_ns: int
    frame_id: str  # the LiDAR frame
    points: np.ndarray  # (N, 4) float32 x, y, z, intensity in the LiDAR frame
    T_world_from_lidar: np.ndarray | None  # (4, 4) float64; None: none recorded (pose.static gives it)


def dataset_sweeps(root: str | Path, split: str, agent_id: str) -> Iterator[Sweep]:
    """The sweeps of ``agent_id`` in a DAIR-V2X-C root's ``split``, frame by frame."""
    reader = DairV2XReader(root, split)
    if agent_id not in {a for a, _ in reader.agents}:
        raise RuntimeConfigError(f"{root} ({split}) has no agent {agent_id!r}: it has {reader.agents}")
    last_ns = None
    for frame in reader:
        sample = frame.agent(agent_id)
        stamp_ns = sample.timestamp_us * 1000
        if last_ns is not None and stamp_ns <= last_ns:
            if stamp_ns < last_ns:
                log.warning("frame %s skipped: %s's sweep %d is older than the last one played (%d)",
                            frame.frame_id, agent_id, stamp_ns, last_ns)
            continue
        last_ns = stamp_ns
        yield Sweep(stamp_ns, lidar_frame(agent_id), sample.points, sample.T_world_from_lidar)


def bag_sweeps(
    path: str | Path, points_topic: str, pose_topic: str | None, max_age_ms: float
) -> Iterator[Sweep]:
    """The clouds of ``points_topic`` in a bag with their poses from ``pose_topic`` (None: no
    poses; ``pose.static`` gives them)."""
    from rosbags.rosbag2 import Reader

    store = project_typestore()
    poses = PoseBuffer(max_age_ms=max_age_ms)
    pending: deque[Sweep] = deque()  # clouds waiting for a pose at or after their stamp
    try:
        reader = Reader(path)
        reader.open()
    except Exception as exc:  # rosbags raises several types for missing or corrupt bags
        raise RuntimeConfigError(f"cannot read bag {path}: {exc}") from exc
    try:
        topics = {c.topic for c in reader.connections}
        wanted = [t for t in (points_topic, pose_topic) if t is not None]
        if missing := [t for t in wanted if t not in topics]:
            raise RuntimeConfigError(f"bag {path} has no topic {missing}; it has {sorted(topics)}")
        connections = [c for c in reader.connections if c.topic in wanted]
        for connection, _, raw in reader.messages(connections=connections):
            msg = store.deserialize_cdr(bytes(raw), connection.msgtype)
            stamp_ns = int(msg.header.stamp.sec) * NS_PER_S + int(msg.header.stamp.nanosec)
            if connection.topic == points_topic:
                points = cloud_data_to_xyzi(
                    msg.fields,
                    msg.point_step,
                    msg.data,
                    width=msg.width,
                    height=msg.height,
                    row_step=msg.row_step,
                    is_bigendian=msg.is_bigendian,
                )
                pending.append(Sweep(stamp_ns, msg.header.frame_id, points, None))
            else:
                p, q = msg.pose.position, msg.pose.orientation
                poses.add(stamp_ns, pose_matrix((p.x, p.y, p.z), (q.x, q.y, q.z, q.w)))
            while pending and (pose_topic is None or poses.settled(pending[0].stamp_ns)):
                yield from _with_pose(pending.popleft(), poses, pose_topic)
        while pending:
            yield from _with_pose(pending.popleft(), poses, pose_topic)
    finally:
        reader.close()


def _with_pose(sweep: Sweep, poses: PoseBuffer, pose_topic: str | None) -> Iterator[Sweep]:
    if pose_topic is None:
        yield sweep
        return
    T = poses.lookup(sweep.stamp_ns)
    if T is None:
        log.warning("sweep %d skipped: no pose on %s at or up to %g ms before it", sweep.stamp_ns, pose_topic,
                    poses.max_age_ns / 1e6)
        return
    yield sweep._replace(T_world_from_lidar=T)
