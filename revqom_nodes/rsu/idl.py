"""Cyclone DDS types that mirror the ROS 2 messages a roadside unit sends and reads, without ROS.

rclpy publishes a ROS message ``pkg/msg/Type`` as the DDS type ``pkg::msg::dds_::Type_`` on
the DDS topic ``rt/<topic>``, nested types named the same way, fields in the ``.msg`` order
with the same types (``uint8[]``: a sequence, ``uint8[8]``: an array, both written from
bytes; a reader gets the sequence as a list of ints, the arrays as bytes; constants are no
fields). The dataclasses below follow ``msg/EncodedBEV.msg`` and the standard messages it
uses; ``tests/rsu/test_idl.py`` compares them with the ``.msg`` definitions field by field.
Plain CDR (XCDR1) and final extensibility, as ROS 2 types go on the wire. A Fast DDS reader
matches them only with its type propagation off (docs/rsu.md, config/fastdds.xml).
"""

# No `from __future__ import annotations`: cyclonedds resolves the field types of these classes
# at run time, and cannot resolve string annotations of builtins (str).
from dataclasses import dataclass, field

from cyclonedds.idl import IdlStruct, types
from cyclonedds.idl.annotations import final
from cyclonedds.idl.types import array, float32, float64, int32, uint8, uint16, uint32

ROS_TOPIC_PREFIX = "rt"  # rclpy's topics on DDS: /infrastructure/encoded_bev -> rt/infrastructure/encoded_bev


def dds_topic_name(ros_topic: str) -> str:
    """An absolute ROS 2 topic name -> its DDS topic name; ValueError for a relative one."""
    if not ros_topic.startswith("/") or ros_topic.endswith("/") or "//" in ros_topic:
        raise ValueError(f"need an absolute ROS topic name (/infrastructure/encoded_bev), got {ros_topic!r}")
    return ROS_TOPIC_PREFIX + ros_topic


@final
@dataclass
class Time(IdlStruct, typename="builtin_interfaces::msg::dds_::Time_"):
    sec: int32 = 0
    nanosec: uint32 = 0


@final
@dataclass
class Header(IdlStruct, typename="std_msgs::msg::dds_::Header_"):
    stamp: Time = field(default_factory=Time)
    frame_id: str = ""


@final
@dataclass
class Point(IdlStruct, typename="geometry_msgs::msg::dds_::Point_"):
    x: float64 = 0.0
    y: float64 = 0.0
    z: float64 = 0.0


@final
@dataclass
class Quaternion(IdlStruct, typename="geometry_msgs::msg::dds_::Quaternion_"):
    x: float64 = 0.0
    y: float64 = 0.0
    z: float64 = 0.0
    w: float64 = 1.0


@final
@dataclass
class Pose(IdlStruct, typename="geometry_msgs::msg::dds_::Pose_"):
    position: Point = field(default_factory=Point)
    orientation: Quaternion = field(default_factory=Quaternion)


@final
@dataclass
class Clock(IdlStruct, typename="rosgraph_msgs::msg::dds_::Clock_"):
    clock: Time = field(default_factory=Time)


@final
@dataclass
class EncodedBEV(IdlStruct, typename="revqom::msg::dds_::EncodedBEV_"):
    """``msg/EncodedBEV.msg``: the meaning of every field is documented there."""

    header: Header = field(default_factory=Header)
    agent_id: str = ""
    role: uint8 = 0
    sequence: uint32 = 0
    lidar_pose: Pose = field(default_factory=Pose)
    height: uint16 = 0
    width: uint16 = 0
    cell_size_m: float32 = 0.0
    codebook_size: uint16 = 0
    num_quantizers: uint8 = 0
    codebook_id: str = ""
    encoding: uint8 = 0
    slice_index: uint16 = 0
    num_slices: uint16 = 0
    first_cell: uint32 = 0
    num_cells: uint32 = 0
    interleave: uint8 = 0
    payload: types.sequence[uint8] = b""  # types.: the field above hides `sequence`
    signer_digest: array[uint8, 8] = bytes(8)
    signature: array[uint8, 64] = bytes(64)
