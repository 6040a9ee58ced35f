"""The roadside unit's DDS side without ROS: the Cyclone DDS participant, the EncodedBEV writer,
the /clock reader, and runtime slices -> the ``rsu.idl`` messages.

The participant joins the domain ``ROS_DOMAIN_ID`` names (0 when unset), as rclpy does. With
``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` it stays on loopback the way rclpy on Fast DDS
does there: no multicast, discovery by unicast to 127.0.0.1; ``CYCLONEDDS_URI``, when set,
configures Cyclone DDS instead (its own documentation).
"""

from __future__ import annotations

import os

from cyclonedds.core import Policy, Qos
from cyclonedds.domain import Domain, DomainParticipant
from cyclonedds.pub import DataWriter
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic

from revqom_nodes.rsu.idl import Clock, EncodedBEV, Header, Point, Pose, Quaternion, Time, dds_topic_name
from revqom_nodes.runtime.frames import NS_PER_S, ReceivedSlice

LOOPBACK_CONFIG = (
    "<CycloneDDS><Domain><General>"
    '<Interfaces><NetworkInterface address="127.0.0.1"/></Interfaces>'
    "<AllowMulticast>false</AllowMulticast>"
    "</General><Discovery>"
    "<ParticipantIndex>auto</ParticipantIndex>"
    '<Peers><Peer address="127.0.0.1"/></Peers>'
    "</Discovery></Domain></CycloneDDS>"
)
# EncodedBEV: best effort (a late map is not resent), as ros/qos.py's ENCODED_BEV_QOS; a best-effort
# writer holds nothing for resending, the readers' depth is what keeps a burst of slices.
ENCODED_BEV_QOS = Qos(Policy.Reliability.BestEffort, Policy.History.KeepLast(1))
CLOCK_QOS = Qos(Policy.Reliability.BestEffort, Policy.History.KeepLast(1))  # as a replay publishes /clock


def domain_id_from_env() -> int:
    """``ROS_DOMAIN_ID`` (0 when unset); ValueError for anything but an integer 0..232."""
    value = os.environ.get("ROS_DOMAIN_ID", "").strip() or "0"
    if not value.isdigit() or int(value) > 232:
        raise ValueError(f"ROS_DOMAIN_ID must be an integer 0..232, got {value!r}")
    return int(value)


def participant(domain_id: int) -> tuple[DomainParticipant, Domain | None]:
    """A participant in ``domain_id``, on loopback only when the ROS environment asks for it,
    and the configured domain it is in (None: Cyclone's defaults); keep both alive together."""
    localhost = os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "").upper() == "LOCALHOST"
    loopback = localhost and not os.environ.get("CYCLONEDDS_URI")
    domain = Domain(domain_id, LOOPBACK_CONFIG) if loopback else None
    return DomainParticipant(domain_id), domain


def encoded_bev_writer(dp: DomainParticipant, ros_topic: str) -> DataWriter:
    """A writer of EncodedBEV on the DDS topic rclpy uses for ``ros_topic`` (absolute)."""
    return DataWriter(dp, Topic(dp, dds_topic_name(ros_topic), EncodedBEV), ENCODED_BEV_QOS)


def clock_reader(dp: DomainParticipant) -> DataReader:
    """A reader of the ROS ``/clock`` (rosgraph_msgs/Clock)."""
    return DataReader(dp, Topic(dp, dds_topic_name("/clock"), Clock), CLOCK_QOS)


def time_to_ns(stamp: Time) -> int:
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def slice_to_dds(message: ReceivedSlice) -> EncodedBEV:
    """A slice as the agent built it (``AgentEncoder.messages``, signed or not) -> its message,
    field for field as ``ros.conversions.slice_to_encoded_bev`` writes the ROS one."""
    sec, nanosec = divmod(int(message.stamp_ns), NS_PER_S)
    (px, py, pz), (qx, qy, qz, qw) = message.position, message.orientation
    return EncodedBEV(
        header=Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=message.frame_id),
        agent_id=message.agent_id,
        role=message.role,
        sequence=message.sequence,
        lidar_pose=Pose(position=Point(px, py, pz), orientation=Quaternion(qx, qy, qz, qw)),
        height=message.height,
        width=message.width,
        cell_size_m=float(message.cell_size_m),
        codebook_size=message.codebook_size,
        num_quantizers=message.num_quantizers,
        codebook_id=message.codebook_id,
        encoding=message.encoding,
        slice_index=message.slice_index,
        num_slices=message.num_slices,
        first_cell=message.first_cell,
        num_cells=message.num_cells,
        interleave=message.interleave,
        payload=bytes(message.payload),
        signer_digest=bytes(message.signer_digest),
        signature=bytes(message.signature),
    )
