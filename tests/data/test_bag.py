"""DAIR -> ROS 2 bag: topics, stamps, and a round trip through rclpy's deserializer."""

from __future__ import annotations

import shutil
import struct
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from revqom_nodes.data.bag import TOPICS, bag_frames, convert_to_bag, lidar_frame, project_typestore
from revqom_nodes.data.dairv2x import DairV2XReader
from revqom_nodes.data.errors import DatasetError
from revqom_nodes.data.pointcloud import cloud_data_to_xyzi
from revqom_nodes.geometry import matrix_from_quaternion

TOPIC_TYPES = dict(TOPICS.values())


def _raw_messages(bag: Path) -> dict[str, list[tuple[int, bytes]]]:
    """Topic -> [(bag timestamp ns, serialized CDR)], in bag order."""
    from rosbags.rosbag2 import Reader

    out: dict[str, list[tuple[int, bytes]]] = defaultdict(list)
    with Reader(bag) as reader:
        assert {c.topic: c.msgtype for c in reader.connections} == TOPIC_TYPES
        for connection, stamp, raw in reader.messages():
            out[connection.topic].append((stamp, bytes(raw)))
    return out


def _ns(stamp: object) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec  # type: ignore[attr-defined]


def _pose_matrix(pose: object) -> np.ndarray:
    p, q = pose.position, pose.orientation  # type: ignore[attr-defined]
    return matrix_from_quaternion([q.x, q.y, q.z, q.w], [p.x, p.y, p.z])


@pytest.fixture(scope="module")
def mcap_bag(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bags") / "tiny"
    report = convert_to_bag(tiny_root, out, progress=False)
    assert report.frames_written == 4 and not report.skipped_ids and report.messages == 4 * 8
    assert report.bytes_written > 0 and (out / "metadata.yaml").is_file()
    return out


def test_rosbags_view_of_every_topic(tiny_root: Path, mcap_bag: Path) -> None:
    """Every topic read back with rosbags' own deserializer (tf2_msgs has no rclpy wheel)."""
    store = project_typestore()
    raw = _raw_messages(mcap_bag)
    frames = list(DairV2XReader(tiny_root, "all"))
    assert all(len(raw[topic]) == len(frames) for topic in TOPIC_TYPES if topic != "/tf")
    assert len(raw["/tf"]) == 2 * len(frames)
    tf = {}
    for stamp, data in raw["/tf"]:
        (stamped,) = store.deserialize_cdr(data, TOPIC_TYPES["/tf"]).transforms
        assert stamped.header.frame_id == "world" and _ns(stamped.header.stamp) == stamp
        tf[stamped.child_frame_id, stamp] = stamped.transform
    for i, frame in enumerate(frames):
        for agent in frame.agents:
            transform = tf[lidar_frame(agent.agent_id), agent.timestamp_us * 1000]
            t, q = transform.translation, transform.rotation
            T = matrix_from_quaternion([q.x, q.y, q.z, q.w], [t.x, t.y, t.z])
            np.testing.assert_allclose(T, agent.T_world_from_lidar, atol=1e-9)

        stamp, data = raw["/ground_truth/boxes"][i]
        boxes = store.deserialize_cdr(data, TOPIC_TYPES["/ground_truth/boxes"])
        assert stamp == frame.ego.timestamp_us * 1000 and boxes.header.frame_id == "world"
        got = [
            [d.center.x, d.center.y, d.center.z, d.length, d.width, d.height, d.yaw] for d in boxes.detections
        ]
        np.testing.assert_array_equal(np.array(got).reshape(-1, 7), frame.boxes_world)
        assert {(d.label, d.score) for d in boxes.detections} == {("vehicle", 1.0)}

        info = store.deserialize_cdr(
            raw["/cooperative/frame_info"][i][1], TOPIC_TYPES["/cooperative/frame_info"]
        )
        vehicle, infra = frame.agents
        assert (info.vehicle_frame_id, info.infrastructure_frame_id) == (vehicle.frame_id, infra.frame_id)
        assert _ns(info.vehicle_stamp) == vehicle.timestamp_us * 1000
        assert _ns(info.infrastructure_stamp) == infra.timestamp_us * 1000
        assert (info.system_error_offset_x, info.system_error_offset_y) == frame.system_error_offset


def test_rclpy_reads_clouds_and_poses(tiny_root: Path, mcap_bag: Path) -> None:
    """Round trip: points and poses deserialized by rclpy equal the reader's."""
    serialization = pytest.importorskip("rclpy.serialization")
    sensor_msgs = pytest.importorskip("sensor_msgs.msg")
    geometry_msgs = pytest.importorskip("geometry_msgs.msg")
    raw = _raw_messages(mcap_bag)
    for i, frame in enumerate(DairV2XReader(tiny_root, "all")):
        for agent in frame.agents:
            stamp, data = raw[f"/{agent.role}/lidar/points"][i]
            cloud = serialization.deserialize_message(data, sensor_msgs.PointCloud2)
            assert stamp == _ns(cloud.header.stamp) == agent.timestamp_us * 1000
            assert cloud.header.frame_id == lidar_frame(agent.agent_id) and cloud.is_dense
            points = cloud_data_to_xyzi(
                cloud.fields,
                cloud.point_step,
                cloud.data,
                width=cloud.width,
                height=cloud.height,
                row_step=cloud.row_step,
                is_bigendian=cloud.is_bigendian,
            )
            np.testing.assert_array_equal(points, agent.points)
            _, data = raw[f"/{agent.role}/pose"][i]
            pose = serialization.deserialize_message(data, geometry_msgs.PoseStamped)
            assert pose.header.frame_id == "world" and _ns(pose.header.stamp) == agent.timestamp_us * 1000
            np.testing.assert_allclose(_pose_matrix(pose.pose), agent.T_world_from_lidar, atol=1e-9)


def test_rclpy_reads_project_messages(tiny_root: Path, mcap_bag: Path) -> None:
    serialization = pytest.importorskip("rclpy.serialization")
    revqom_msg = pytest.importorskip("revqom.msg")
    raw = _raw_messages(mcap_bag)
    for i, frame in enumerate(DairV2XReader(tiny_root, "all")):
        boxes = serialization.deserialize_message(
            raw["/ground_truth/boxes"][i][1], revqom_msg.Detection3DArray
        )
        got = [
            [d.center.x, d.center.y, d.center.z, d.length, d.width, d.height, d.yaw] for d in boxes.detections
        ]
        np.testing.assert_array_equal(np.array(got).reshape(-1, 7), frame.boxes_world)
        info = serialization.deserialize_message(
            raw["/cooperative/frame_info"][i][1], revqom_msg.CooperativeFrameInfo
        )
        assert info.vehicle_frame_id == frame.ego.frame_id
        assert info.system_error_offset_x == frame.system_error_offset[0]


def test_the_bag_lists_the_readers_frames_with_every_agents_stamp(
    tiny_root: Path, mcap_bag: Path, tmp_path: Path
) -> None:
    reader = DairV2XReader(tiny_root, "all")
    assert bag_frames(mcap_bag) == [
        [(a.agent_id, a.timestamp_us) for a in reader[i].agents] for i in range(len(reader))
    ]
    older = (mcap_bag / "metadata.yaml").read_text().replace("revqom.frames", "other")  # a bag from before
    (tmp_path / "metadata.yaml").write_text(older)
    with pytest.raises(DatasetError, match=r"revqom\.frames.*convert the dataset again"):
        bag_frames(tmp_path)


def test_sqlite3_storage(tiny_root: Path, tmp_path: Path) -> None:
    report = convert_to_bag(tiny_root, tmp_path / "bag", storage="sqlite3", split="val", progress=False)
    assert report.frames_written == len(DairV2XReader(tiny_root, "val"))
    raw = _raw_messages(tmp_path / "bag")
    assert len(raw["/vehicle/lidar/points"]) == report.frames_written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bag"]


def _corrupt_copy(tiny_root: Path, tmp_path: Path) -> tuple[Path, str]:
    root = tmp_path / "root"
    shutil.copytree(tiny_root, root)
    reader = DairV2XReader(root, "all")
    bad = reader.frame_ids[1]
    pcd = root / "vehicle-side" / "velodyne" / f"{bad}.pcd"
    pcd.write_bytes(pcd.read_bytes()[:-100])
    return root, bad


@pytest.mark.parametrize("defect", ["truncated", "corrupt_lzf"])
def test_corrupt_frame_is_skipped_and_counted(
    tiny_root: Path, tmp_path: Path, defect: str, caplog: pytest.LogCaptureFixture
) -> None:
    root, bad = _corrupt_copy(tiny_root, tmp_path)
    if defect == "corrupt_lzf":  # a well-formed header and size words around a malformed LZF block
        pcd = root / "vehicle-side" / "velodyne" / f"{bad}.pcd"
        pcd.write_bytes(
            b"VERSION 0.7\nFIELDS x y z intensity\nSIZE 4 4 4 4\nTYPE F F F F\nCOUNT 1 1 1 1\n"
            b"WIDTH 2\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS 2\nDATA binary_compressed\n"
            + struct.pack("<II", 4, 32) + b"\x01abc"
        )
    report = convert_to_bag(root, tmp_path / "bag", progress=False)
    assert report.skipped_ids == [bad] and report.frames_written == 3
    raw = _raw_messages(tmp_path / "bag")
    assert len(raw["/vehicle/lidar/points"]) == 3 and len(raw["/tf"]) == 6
    assert f"{bad}.pcd" in caplog.text  # the warning names the file


def test_strict_stops_and_leaves_nothing(tiny_root: Path, tmp_path: Path) -> None:
    root, bad = _corrupt_copy(tiny_root, tmp_path)
    with pytest.raises(DatasetError, match=f"frame {bad}: .*{bad}.pcd"):
        convert_to_bag(root, tmp_path / "bag", strict=True, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]


def test_refuses_existing_output_and_bad_storage(tiny_root: Path, tmp_path: Path) -> None:
    (tmp_path / "bag").mkdir()
    with pytest.raises(DatasetError, match="exists already"):
        convert_to_bag(tiny_root, tmp_path / "bag", progress=False)
    with pytest.raises(ValueError, match="storage"):
        convert_to_bag(tiny_root, tmp_path / "other", storage="rosbag1", progress=False)
