"""The Cyclone DDS types of ``rsu/idl.py`` mirror msg/EncodedBEV.msg and the standard messages it
nests, field by field, and an EncodedBEV goes through Cyclone DDS and back unchanged."""

from __future__ import annotations

import dataclasses
import time
import typing

import numpy as np
import pytest
from cyclonedds.idl import types

from revqom_nodes.data.bag import project_typestore
from revqom_nodes.geometry import make_transform, rotation_z
from revqom_nodes.rsu import idl

BASE_TYPES = {
    "uint8": types.uint8,
    "uint16": types.uint16,
    "uint32": types.uint32,
    "int32": types.int32,
    "float32": types.float32,
    "float64": types.float64,
    "string": str,
}
MIRRORS = {  # ROS message type -> its Cyclone class: every type EncodedBEV and /clock use
    "revqom/msg/EncodedBEV": idl.EncodedBEV,
    "std_msgs/msg/Header": idl.Header,
    "builtin_interfaces/msg/Time": idl.Time,
    "geometry_msgs/msg/Pose": idl.Pose,
    "geometry_msgs/msg/Point": idl.Point,
    "geometry_msgs/msg/Quaternion": idl.Quaternion,
    "rosgraph_msgs/msg/Clock": idl.Clock,
}


def _expected(store, node: tuple) -> object:
    """A rosbags field type -> the annotation its Cyclone mirror must have."""
    kind, detail = node
    if kind.name == "BASE":
        return BASE_TYPES[detail[0]]
    if kind.name == "NAME":
        return MIRRORS[detail]
    element, size = detail
    if kind.name == "SEQUENCE":
        return types.sequence[_expected(store, element)]
    return types.array[_expected(store, element), size]


@pytest.mark.parametrize("ros_type", MIRRORS)
def test_each_type_mirrors_its_message_field_by_field(ros_type: str) -> None:
    store = project_typestore()
    _, fields = store.fielddefs[ros_type]
    cls = MIRRORS[ros_type]
    package, _, name = ros_type.split("/")
    assert cls.__idl_typename__ == f"{package}::msg::dds_::{name}_"
    hints = typing.get_type_hints(cls, include_extras=True)
    assert list(hints) == [field_name for field_name, _ in fields]  # same names, same order
    for field_name, node in fields:
        assert hints[field_name] == _expected(store, node), f"{ros_type}.{field_name}"


def _plain(msg: idl.EncodedBEV) -> idl.EncodedBEV:
    """``msg`` with its byte fields as bytes (a reader gets the payload as a list of ints) and its
    float32 field rounded as the wire carries it."""
    return dataclasses.replace(msg, payload=bytes(msg.payload), signer_digest=bytes(msg.signer_digest),
                               signature=bytes(msg.signature), cell_size_m=float(np.float32(msg.cell_size_m)))


def test_dds_topic_names_are_rclpys() -> None:
    assert idl.dds_topic_name("/infrastructure/encoded_bev") == "rt/infrastructure/encoded_bev"
    with pytest.raises(ValueError, match="absolute"):
        idl.dds_topic_name("encoded_bev")


def test_an_encoded_bev_goes_through_cyclone_dds_unchanged(tiny_model, sweeps, dds_env, tmp_path) -> None:
    """One process: the unit's writer, a reader on rclpy's topic name; every slice of a signed,
    sliced sweep arrives equal to what was written."""
    from cyclonedds.core import Policy, Qos
    from cyclonedds.sub import DataReader
    from cyclonedds.topic import Topic

    from revqom_nodes.rsu.dds import domain_id_from_env, encoded_bev_writer, participant, slice_to_dds
    from revqom_nodes.runtime.encoder import AgentEncoder
    from revqom_nodes.runtime.security import load_signer
    from tests.trust.conftest import make_keys

    keys = make_keys(tmp_path / "keys").root
    signer = load_signer(keys, agent_id="infrastructure", role=1)
    encoder = AgentEncoder(tiny_model, slice_bytes=100, interleave=2)
    T = make_transform(rotation_z(0.4), [2800.0, -1200.0, 1.9])
    messages = encoder.messages(
        encoder.encode(sweeps["infrastructure"]).slices, agent_id="infrastructure",
        T_world_from_lidar=T, stamp_ns=1_626_155_000_100_000_000, sequence=7, role=1,
        frame_id="infrastructure_lidar", signer=signer,
    )
    sent = [slice_to_dds(m) for m in messages]
    assert len(sent) > 1 and all(any(m.signature) for m in sent)

    dp, _domain = participant(domain_id_from_env())
    writer = encoded_bev_writer(dp, "/infrastructure/encoded_bev")
    topic = Topic(dp, "rt/infrastructure/encoded_bev", idl.EncodedBEV)
    reader = DataReader(dp, topic, Qos(Policy.Reliability.BestEffort, Policy.History.KeepLast(64)))
    deadline = time.monotonic() + 10
    while not writer.get_matched_subscriptions() and time.monotonic() < deadline:
        time.sleep(0.01)
    for message in sent:
        writer.write(message)
    received = []
    while len(received) < len(sent) and time.monotonic() < deadline:
        received += reader.take(N=64)
        time.sleep(0.01)
    assert [_plain(m) for m in received] == [_plain(m) for m in sent]
    first = received[0]
    assert first.header.stamp == idl.Time(sec=1_626_155_000, nanosec=100_000_000)
    p, q = first.lidar_pose.position, first.lidar_pose.orientation
    np.testing.assert_allclose([p.x, p.y, p.z], T[:3, 3])
    assert bytes(first.payload) == bytes(messages[0].payload)
    assert bytes(first.signature) == messages[0].signature and q.w > 0
