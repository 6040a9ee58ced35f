"""Message conversions: clouds, poses, EncodedBEV, detections, markers, serialized stamps."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

pytestmark = pytest.mark.ros

rclpy = pytest.importorskip("rclpy")

from builtin_interfaces.msg import Time  # noqa: E402
from rclpy.serialization import serialize_message  # noqa: E402
from sensor_msgs.msg import PointCloud2, PointField  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from visualization_msgs.msg import Marker  # noqa: E402

from revqom_nodes.data.errors import DatasetError  # noqa: E402
from revqom_nodes.data.pointcloud import xyzi_to_cloud_data  # noqa: E402
from revqom_nodes.geometry import make_transform, rotation_z  # noqa: E402
from revqom_nodes.perception.postprocess import Detections  # noqa: E402
from revqom_nodes.ros.conversions import (  # noqa: E402
    boxes_to_markers,
    cdr_header_stamp_ns,
    cdr_to_slice,
    cloud_to_points,
    detections_to_msg,
    encoded_bev_to_slice,
    matrix_to_pose,
    msg_to_boxes,
    ns_to_stamp,
    pose_to_matrix,
    slice_to_encoded_bev,
    stamp_to_ns,
)


def make_cloud(points: np.ndarray, stamp_ns: int = 1_626_155_000_123_456_789) -> PointCloud2:
    fields, point_step, data = xyzi_to_cloud_data(points)
    msg = PointCloud2(
        height=1,
        width=len(points),
        point_step=point_step,
        row_step=point_step * len(points),
        is_bigendian=False,
        is_dense=True,
    )
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.fields = [
        PointField(name=f.name, offset=f.offset, datatype=f.datatype, count=f.count) for f in fields
    ]
    msg.data = data
    return msg


def test_cloud_round_trip_and_bad_clouds():
    points = np.random.default_rng(0).normal(size=(100, 4)).astype(np.float32)
    msg = make_cloud(points)
    np.testing.assert_array_equal(cloud_to_points(msg), points)
    truncated = make_cloud(points)
    truncated.data = bytes(msg.data)[:-5]
    with pytest.raises(DatasetError, match="bytes"):
        cloud_to_points(truncated)
    no_z = make_cloud(points)
    no_z.fields = [f for f in no_z.fields if f.name != "z"]
    with pytest.raises(DatasetError, match="z"):
        cloud_to_points(no_z)


def test_stamps_and_serialized_header():
    stamp = 1_626_155_000_987_654_321
    assert stamp_to_ns(ns_to_stamp(stamp)) == stamp
    msg = make_cloud(np.zeros((3, 4), np.float32), stamp)
    assert cdr_header_stamp_ns(serialize_message(msg)) == stamp
    with pytest.raises(ValueError):
        cdr_header_stamp_ns(b"\x00\x01")


def test_pose_round_trip_keeps_float64_world_coordinates():
    T = make_transform(rotation_z(2.5), [2803.123456789, -1234.987654321, 6.25])
    np.testing.assert_allclose(pose_to_matrix(matrix_to_pose(T)), T, atol=1e-12)


def test_encoded_bev_round_trip(tiny_model, sweeps):
    from revqom_nodes.runtime.encoder import AgentEncoder
    from revqom_nodes.runtime.validation import Expectations, check_frame

    encoder = AgentEncoder(tiny_model)
    sweep = encoder.encode(sweeps["infrastructure"])
    T = make_transform(rotation_z(-0.7), [2806.0, -1196.0, 6.0])
    (message,) = encoder.messages(
        sweep.slices,
        agent_id="infrastructure",
        role=1,
        sequence=2**32 + 3,
        stamp_ns=1_626_155_000_000_000_005,
        frame_id="infrastructure_lidar",
        T_world_from_lidar=T,
    )
    msg = slice_to_encoded_bev(message)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1_626_155_000, 5)
    assert msg.header.frame_id == "infrastructure_lidar" and not msg.signer_digest.any()
    assert bytes(msg.payload) == sweep.slices[0].payload
    slice_fields = (msg.slice_index, msg.num_slices, msg.first_cell, msg.num_cells, msg.interleave)
    assert slice_fields == (0, 1, 0, 32 * 32, 1)
    frame = encoded_bev_to_slice(msg, received_ns=7, source_ns=6)
    assert (frame.agent_id, frame.sequence, frame.stamp_ns, frame.received_ns) == (
        "infrastructure",
        3,
        1_626_155_000_000_000_005,
        7,
    )
    np.testing.assert_allclose(frame.T_world_from_lidar, T, atol=1e-9)
    np.testing.assert_array_equal(check_frame(frame, Expectations.of(tiny_model)).indices, sweep.indices)


def test_sliced_sweep_messages_carry_their_cells(tiny_model, sweeps):
    from revqom_nodes.codec.slices import cell_order
    from revqom_nodes.codec.wire import Encoding
    from revqom_nodes.runtime.encoder import AgentEncoder
    from revqom_nodes.runtime.validation import Expectations, check_slice

    encoder = AgentEncoder(tiny_model, Encoding.ENTROPY, slice_bytes=20, interleave=3)
    sweep = encoder.encode(sweeps["vehicle"])
    T = make_transform(rotation_z(0.3), [2800.0, -1200.0, 1.9])
    offline = encoder.messages(  # what the agent node publishes, and revqom eval hands the receiver
        sweep.slices, agent_id="vehicle", T_world_from_lidar=T, stamp_ns=1_626_155_000_000_000_009,
        sequence=4, frame_id="vehicle_lidar",
    )
    messages = [slice_to_encoded_bev(message) for message in offline]
    assert len(messages) > 1
    Q, H, W = sweep.indices.shape
    in_order = sweep.indices.reshape(Q, -1)[:, cell_order(H, W, 3)]
    for index, msg in enumerate(messages):
        piece = sweep.slices[index]
        assert (msg.slice_index, msg.num_slices, msg.first_cell, msg.num_cells) == (
            index,
            len(messages),
            piece.first_cell,
            piece.num_cells,
        )
        assert msg.encoding == int(piece.encoding) and bytes(msg.payload) == piece.payload
        frame = encoded_bev_to_slice(msg)
        unlike = {
            f.name for f in dataclasses.fields(frame)
            if f.name != "payload"
            and getattr(frame, f.name) != getattr(offline[index], f.name)
        }
        assert not unlike and bytes(frame.payload) == offline[index].payload
        assert (frame.slice_index, frame.num_slices, frame.first_cell, frame.num_cells, frame.interleave) == (
            index,
            len(messages),
            piece.first_cell,
            piece.num_cells,
            3,
        )
        np.testing.assert_allclose(frame.T_world_from_lidar, T, atol=1e-9)  # every slice has the pose
        cells = check_slice(frame, Expectations.of(tiny_model)).cells
        carried = in_order[:, piece.first_cell : piece.first_cell + piece.num_cells]
        np.testing.assert_array_equal(cells, carried)


def test_detections_and_markers():
    boxes = np.array(
        [[5.0, 1.0, -1.0, 4.5, 2.0, 1.6, 0.3], [-8.0, 3.0, -1.0, 4.0, 1.8, 1.5, -1.2]], np.float32
    )
    scores = np.array([0.9, 0.2], np.float32)
    header = Header(frame_id="vehicle_lidar", stamp=Time(sec=3))
    msg = detections_to_msg(Detections(boxes, scores), header, ["vehicle", "infrastructure"])
    assert msg.header.frame_id == "vehicle_lidar" and list(msg.fused_agent_ids) == [
        "vehicle",
        "infrastructure",
    ]
    got_boxes, got_scores = msg_to_boxes(msg)
    np.testing.assert_allclose(got_boxes, boxes, atol=1e-6)
    np.testing.assert_allclose(got_scores, scores, atol=1e-6)
    markers = boxes_to_markers(boxes, scores, header, "detections").markers
    assert markers[0].action == Marker.DELETEALL
    outlines = [m for m in markers if m.type == Marker.LINE_LIST]
    labels = [m for m in markers if m.type == Marker.TEXT_VIEW_FACING]
    assert len(outlines) == len(labels) == 2 and all(len(m.points) == 24 for m in outlines)
    assert outlines[0].color.g > outlines[1].color.g  # the higher score is greener
    assert labels[0].text == "vehicle 0.90"
    assert len({(m.ns, m.id) for m in markers[1:]}) == 4
    empty = boxes_to_markers(np.zeros((0, 7)), np.zeros(0), header, "detections").markers
    assert [m.action for m in empty] == [Marker.DELETEALL]


def test_stamps_shift_in_place_and_in_nested_messages() -> None:
    """A looping replay stamps each pass later: the header of a serialized cloud is patched in
    place, every Time of a deserialized message (nested ones too) moves by the same offset."""
    from geometry_msgs.msg import PoseStamped
    from rclpy.serialization import deserialize_message
    from revqom.msg import CooperativeFrameInfo

    from revqom_nodes.ros.conversions import shift_header_stamp, shift_times

    offset_ns = 1_367_000_000
    cloud = make_cloud(np.zeros((3, 4), np.float32), 1_626_155_676_900_000_000)
    shifted = deserialize_message(shift_header_stamp(serialize_message(cloud), offset_ns), PointCloud2)
    assert stamp_to_ns(shifted.header.stamp) == 1_626_155_676_900_000_000 + offset_ns
    assert bytes(shifted.data) == bytes(cloud.data)
    info = CooperativeFrameInfo()
    info.header.stamp, info.infrastructure_stamp = ns_to_stamp(5), ns_to_stamp(7)
    shift_times(info, offset_ns)
    assert stamp_to_ns(info.header.stamp) == 5 + offset_ns
    assert stamp_to_ns(info.infrastructure_stamp) == 7 + offset_ns
    pose = PoseStamped()
    shift_times(pose, offset_ns)
    assert stamp_to_ns(pose.header.stamp) == offset_ns


@pytest.mark.parametrize("codebook_id", ["ab" * 32, "ab" * 32 + "c", "ab" * 32 + "cd", "ab" * 32 + "cde"])
@pytest.mark.parametrize("frame_id", ["", "vehicle_lidar", "ü" * 5])
def test_serialized_encoded_bev_parses_as_deserialized(frame_id: str, codebook_id: str) -> None:
    """``cdr_to_slice`` (the fusion node's raw subscriptions) reads every field as
    ``deserialize_message`` + ``encoded_bev_to_slice`` do, across the alignment of odd-length
    strings and payloads (every padding before the slice fields); bytes that are no EncodedBEV,
    such as a message cut anywhere, raise ValueError."""
    from rclpy.serialization import deserialize_message
    from revqom.msg import EncodedBEV

    from revqom_nodes.runtime.frames import ReceivedSlice, pose_fields

    rng = np.random.default_rng(len(frame_id))
    position, orientation = pose_fields(make_transform(rotation_z(0.3), [2806.0, -1196.0, 6.0]))
    message = ReceivedSlice(
        agent_id="infrastructure",
        role=1,
        sequence=7,
        stamp_ns=1_626_155_000_123_456_789,
        frame_id=frame_id,
        position=position,
        orientation=orientation,
        height=100,
        width=50,
        cell_size_m=0.8,
        codebook_size=64,
        num_quantizers=3,
        codebook_id=codebook_id,
        encoding=1,
        payload=rng.integers(0, 256, 997 + len(frame_id), dtype=np.uint8).tobytes(),
        slice_index=3,
        num_slices=12,
        first_cell=5,
        num_cells=444,
        interleave=2,
        signer_digest=rng.integers(0, 256, 8, dtype=np.uint8).tobytes(),
        signature=rng.integers(0, 256, 64, dtype=np.uint8).tobytes(),
    )
    raw = serialize_message(slice_to_encoded_bev(message))
    expected = encoded_bev_to_slice(deserialize_message(raw, EncodedBEV), 7, 6)
    parsed = cdr_to_slice(raw, 7, 6)
    for field in dataclasses.fields(ReceivedSlice):
        got, want = getattr(parsed, field.name), getattr(expected, field.name)
        assert bytes(got) == bytes(want) if field.name == "payload" else got == want, field.name
    np.testing.assert_array_equal(parsed.T_world_from_lidar, expected.T_world_from_lidar)
    for cut in range(len(raw)):
        with pytest.raises(ValueError):
            cdr_to_slice(raw[:cut])
