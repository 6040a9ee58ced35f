"""DAIR-V2X-C -> ROS 2 bag (mcap or sqlite3) with ``rosbags``; no rclpy needed.

Per cooperative frame (topics and frames as in README.md, "ROS 2 bag layout"):

| topic | type | frame_id | stamp |
|---|---|---|---|
| /vehicle/lidar/points | sensor_msgs/msg/PointCloud2 | vehicle_lidar | vehicle sweep |
| /infrastructure/lidar/points | sensor_msgs/msg/PointCloud2 | infrastructure_lidar | infrastructure sweep |
| /vehicle/pose | geometry_msgs/msg/PoseStamped | world | vehicle sweep |
| /infrastructure/pose | geometry_msgs/msg/PoseStamped | world | infrastructure sweep |
| /tf | tf2_msgs/msg/TFMessage (world -> each LiDAR, one message per sweep) | world | that sweep |
| /ground_truth/boxes | revqom/msg/Detection3DArray (label "vehicle", score 1) | world | vehicle sweep |
| /cooperative/frame_info | revqom/msg/CooperativeFrameInfo | world | vehicle sweep |

Further agents of a many-agent root get the same topics under their agent id
(``/vehicle_1/lidar/points``, ``/vehicle_1/pose``, frame ``vehicle_1_lidar``); every bag
records its agents in ``metadata.yaml`` (``custom_data[AGENTS_METADATA_KEY]``, ``agent_list``),
its frames in the reader's order with each agent's sweep stamp (``FRAMES_METADATA_KEY``,
``bag_frames``: the frame index ``revqom eval`` and the replay key pose noise on), and holds
``agents.launch.xml``, the agent and fusion nodes ``launch/scenario.launch.xml`` starts
for it (``agents_launch``; the ego: the first agent).

Poses are ``T_world_from_lidar`` as the reader gives them (``system_error_offset``
applied to the infrastructure; the offset also travels in the frame info). The bag is
written under a hidden staging folder and moved to its name only when complete.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from tqdm import tqdm

from revqom_nodes.data.dairv2x import INFRASTRUCTURE, DairV2XReader
from revqom_nodes.data.errors import DatasetError
from revqom_nodes.data.pointcloud import xyzi_to_cloud_data
from revqom_nodes.geometry import quaternion_from_matrix

log = logging.getLogger(__name__)

WORLD_FRAME = "world"
AGENTS_METADATA_KEY = "revqom.agents"  # custom_data key in metadata.yaml: the agent list as JSON
FRAMES_METADATA_KEY = "revqom.frames"  # custom_data key: per reader frame, [[agent id, stamp us], ...]
COMMON_TOPICS: dict[str, tuple[str, str]] = {
    "tf": ("/tf", "tf2_msgs/msg/TFMessage"),
    "ground_truth": ("/ground_truth/boxes", "revqom/msg/Detection3DArray"),
    "frame_info": ("/cooperative/frame_info", "revqom/msg/CooperativeFrameInfo"),
}


def lidar_frame(agent_id: str) -> str:
    """An agent's LiDAR frame: ``vehicle`` -> ``vehicle_lidar``, ``vehicle_1`` -> ``vehicle_1_lidar``."""
    return f"{agent_id}_lidar"


def agent_topics(agent_id: str) -> tuple[str, str]:
    """An agent's (points topic, pose topic): ``/<agent id>/lidar/points``, ``/<agent id>/pose``."""
    return f"/{agent_id}/lidar/points", f"/{agent_id}/pose"


def bag_topics(agent_ids: list[str]) -> dict[str, tuple[str, str]]:
    """{key: (topic, type)} of a bag with these agents: every agent's ``/<agent id>/lidar/points``,
    then every agent's ``/<agent id>/pose``, then the common topics."""
    points = {f"{a}_points": (agent_topics(a)[0], "sensor_msgs/msg/PointCloud2") for a in agent_ids}
    poses = {f"{a}_pose": (agent_topics(a)[1], "geometry_msgs/msg/PoseStamped") for a in agent_ids}
    return {**points, **poses, **COMMON_TOPICS}


TOPICS = bag_topics(["vehicle", "infrastructure"])  # the DAIR-V2X-C (1 + 1) bag


def agent_list(agents: list[tuple[str, str]]) -> list[dict[str, str]]:
    """The bag's agents as recorded under ``AGENTS_METADATA_KEY``: agent id, role, LiDAR frame and
    topics of each (agent id, role), the ego first."""
    return [
        {
            "agent_id": agent_id,
            "role": role,
            "frame_id": lidar_frame(agent_id),
            "points_topic": agent_topics(agent_id)[0],
            "pose_topic": agent_topics(agent_id)[1],
        }
        for agent_id, role in agents
    ]


def bag_custom_data(bag: str | Path, key: str) -> Any:
    """The JSON value a bag from ``revqom data to-bag`` records under ``key`` in its
    ``metadata.yaml`` (``custom_data``); DatasetError when it has none."""
    path = Path(bag) / "metadata.yaml"
    try:
        info = yaml.safe_load(path.read_text(encoding="utf-8"))["rosbag2_bagfile_information"]
        return json.loads(info["custom_data"][key])
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read the bag's metadata ({exc.strerror})") from None
    except (KeyError, TypeError, ValueError, yaml.YAMLError) as exc:
        raise DatasetError(
            f"{path}: nothing under custom_data {key!r} ({exc!r}); "
            "convert the dataset again with `revqom data to-bag`"
        ) from None


def bag_frames(bag: str | Path) -> list[list[tuple[str, int]]]:
    """Per frame of the reader the bag was written from (its order; a skipped frame too): (agent
    id, sweep stamp in microseconds) of each of its agents, the ego first."""
    frames = bag_custom_data(bag, FRAMES_METADATA_KEY)
    try:
        return [[(str(agent_id), int(us)) for agent_id, us in agents] for agents in frames]
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{bag}: malformed {FRAMES_METADATA_KEY!r} ({exc})") from None


STORAGES = ("mcap", "sqlite3")
GROUND_TRUTH_LABEL = "vehicle"


@dataclass
class ConversionReport:
    """What a conversion wrote and skipped; ``bytes_written`` is the bag's size on disk."""

    path: Path
    frames_written: int = 0
    skipped_ids: list[str] = field(default_factory=list)
    messages: int = 0
    bytes_written: int = 0
    seconds: float = 0.0

    @property
    def megabytes_per_second(self) -> float:
        return self.bytes_written / 1e6 / self.seconds if self.seconds > 0 else 0.0


def find_msg_dir() -> Path:
    """The project's ``msg/`` folder: the source tree's, else an installed ``share/revqom/msg``."""
    candidates = [Path(__file__).resolve().parents[2] / "msg"]
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            candidates.append(Path(prefix) / "share" / "revqom" / "msg")
    for candidate in candidates:
        if (candidate / "Detection3DArray.msg").is_file():
            return candidate
    raise DatasetError(f"cannot find the revqom .msg files (looked in {[str(c) for c in candidates]})")


def project_typestore(msg_dir: Path | None = None) -> Any:
    """A rosbags Kilted typestore with the project's ``revqom/msg/*`` types registered."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    types: dict = {}
    for path in sorted((msg_dir or find_msg_dir()).glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(encoding="utf-8"), f"revqom/msg/{path.stem}"))
    store.register(types)
    return store


_MESSAGE_TYPES = (
    "builtin_interfaces/msg/Time",
    "std_msgs/msg/Header",
    "geometry_msgs/msg/Point",
    "geometry_msgs/msg/Quaternion",
    "geometry_msgs/msg/Pose",
    "geometry_msgs/msg/PoseStamped",
    "geometry_msgs/msg/Vector3",
    "geometry_msgs/msg/Transform",
    "geometry_msgs/msg/TransformStamped",
    "sensor_msgs/msg/PointField",
    "sensor_msgs/msg/PointCloud2",
    "tf2_msgs/msg/TFMessage",
    "revqom/msg/Detection3D",
    "revqom/msg/Detection3DArray",
    "revqom/msg/CooperativeFrameInfo",
)


class _Messages:
    """Builds rosbags message objects from reader output."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.t = {full.rsplit("/", 1)[-1]: store.types[full] for full in _MESSAGE_TYPES}

    def time(self, stamp_us: int) -> Any:
        return self.t["Time"](sec=int(stamp_us // 1_000_000), nanosec=int(stamp_us % 1_000_000) * 1000)

    def header(self, stamp_us: int, frame_id: str) -> Any:
        return self.t["Header"](stamp=self.time(stamp_us), frame_id=frame_id)

    def cloud(self, points: np.ndarray, stamp_us: int, frame_id: str) -> Any:
        fields, point_step, data = xyzi_to_cloud_data(points)
        return self.t["PointCloud2"](
            header=self.header(stamp_us, frame_id),
            height=1,
            width=len(points),
            fields=[
                self.t["PointField"](name=f.name, offset=f.offset, datatype=f.datatype, count=f.count)
                for f in fields
            ],
            is_bigendian=False,
            point_step=point_step,
            row_step=point_step * len(points),
            data=np.frombuffer(data, dtype=np.uint8),
            is_dense=True,
        )

    def pose(self, T: np.ndarray, stamp_us: int) -> Any:
        x, y, z, w = quaternion_from_matrix(T)
        pose = self.t["Pose"](
            position=self.t["Point"](x=T[0, 3], y=T[1, 3], z=T[2, 3]),
            orientation=self.t["Quaternion"](x=x, y=y, z=z, w=w),
        )
        return self.t["PoseStamped"](header=self.header(stamp_us, WORLD_FRAME), pose=pose)

    def tf(self, T: np.ndarray, stamp_us: int, child: str) -> Any:
        x, y, z, w = quaternion_from_matrix(T)
        transform = self.t["Transform"](
            translation=self.t["Vector3"](x=T[0, 3], y=T[1, 3], z=T[2, 3]),
            rotation=self.t["Quaternion"](x=x, y=y, z=z, w=w),
        )
        stamped = self.t["TransformStamped"](
            header=self.header(stamp_us, WORLD_FRAME), child_frame_id=child, transform=transform
        )
        return self.t["TFMessage"](transforms=[stamped])

    def boxes(self, boxes: np.ndarray, stamp_us: int) -> Any:
        detections = [
            self.t["Detection3D"](
                label=GROUND_TRUTH_LABEL,
                score=1.0,
                center=self.t["Point"](x=x, y=y, z=z),
                length=l,
                width=w,
                height=h,
                yaw=yaw,
            )
            for x, y, z, l, w, h, yaw in np.asarray(boxes, dtype=np.float64).tolist()
        ]
        return self.t["Detection3DArray"](
            header=self.header(stamp_us, WORLD_FRAME), fused_agent_ids=[], detections=detections
        )

    def frame_info(self, vehicle: Any, infrastructure: Any, offset: tuple[float, float]) -> Any:
        return self.t["CooperativeFrameInfo"](
            header=self.header(vehicle.timestamp_us, WORLD_FRAME),
            vehicle_frame_id=vehicle.frame_id,
            infrastructure_frame_id=infrastructure.frame_id,
            vehicle_stamp=self.time(vehicle.timestamp_us),
            infrastructure_stamp=self.time(infrastructure.timestamp_us),
            system_error_offset_x=float(offset[0]),
            system_error_offset_y=float(offset[1]),
        )


def _frame_messages(build: _Messages, frame: Any) -> list[tuple[str, int, Any]]:
    """(topic key, stamp in ns, message) of one cooperative frame, in agent order; the frame info
    pairs the ego with the first roadside unit, as in DAIR-V2X-C."""
    out = []
    for agent in frame.agents:
        name, stamp = agent.agent_id, agent.timestamp_us
        out += [
            (f"{name}_points", stamp, build.cloud(agent.points, stamp, lidar_frame(name))),
            (f"{name}_pose", stamp, build.pose(agent.T_world_from_lidar, stamp)),
            ("tf", stamp, build.tf(agent.T_world_from_lidar, stamp, lidar_frame(name))),
        ]
    stamp = frame.ego.timestamp_us
    out.append(("ground_truth", stamp, build.boxes(frame.boxes_world, stamp)))
    infrastructure = frame.agent(INFRASTRUCTURE)
    out.append(("frame_info", stamp, build.frame_info(frame.ego, infrastructure, frame.system_error_offset)))
    return [(key, us * 1000, msg) for key, us, msg in out]


def convert_to_bag(
    root: str | Path,
    out: str | Path,
    *,
    split: str = "all",
    storage: str = "mcap",
    strict: bool = False,
    progress: bool = True,
    msg_dir: Path | None = None,
) -> ConversionReport:
    """Write the frames of a DAIR-V2X-C ``split`` to the bag folder ``out``.

    A frame that fails to read is logged by id, skipped and counted; with ``strict`` the
    first one stops the run (:class:`DatasetError`) and nothing is left at ``out``.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer

    from revqom_nodes.data.agents_launch import AGENTS_LAUNCH_FILE, agents_launch_xml

    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
    out = Path(out)
    if out.exists():
        raise DatasetError(f"{out}: exists already, not overwriting")
    reader = DairV2XReader(root, split)
    build = _Messages(project_typestore(msg_dir))
    report = ConversionReport(out)
    started = time.perf_counter()
    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        agents = reader.agents
        topics = bag_topics([agent_id for agent_id, _ in agents])
        with Writer(staging / out.name, version=Writer.VERSION_LATEST, storage_plugin=plugin) as writer:
            connections = {
                key: writer.add_connection(topic, msgtype, typestore=build.store)
                for key, (topic, msgtype) in topics.items()
            }
            writer.set_custom_data(AGENTS_METADATA_KEY, json.dumps(agent_list(agents)))
            frames = [list(zip(reader.agent_ids(i), reader.timestamps_us(i), strict=True))
                      for i in range(len(reader))]
            writer.set_custom_data(FRAMES_METADATA_KEY, json.dumps(frames))
            for i in tqdm(range(len(reader)), desc="to-bag", unit="frame", disable=not progress):
                try:
                    messages = _frame_messages(build, reader[i])
                except DatasetError as exc:
                    if strict:
                        raise
                    log.warning("skipping %s", exc)
                    report.skipped_ids.append(reader.frame_ids[i])
                    continue
                for key, stamp_ns, msg in messages:
                    writer.write(connections[key], stamp_ns, build.store.serialize_cdr(msg, topics[key][1]))
                report.messages += len(messages)
                report.frames_written += 1
        launch = agents_launch_xml(agents, [agents[0][0]])
        (staging / out.name / AGENTS_LAUNCH_FILE).write_text(launch, encoding="utf-8")
        os.replace(staging / out.name, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    report.seconds = time.perf_counter() - started
    report.bytes_written = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    if report.skipped_ids:
        log.warning("skipped %d corrupt frame(s): %s", len(report.skipped_ids), ", ".join(report.skipped_ids))
    return report
