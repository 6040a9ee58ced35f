"""What the receiver handles, without ROS types: ``ReceivedSlice`` (one EncodedBEV message, as
it arrived) and ``AssembledMap`` (one agent's sweep assembled from its slices: what fusion takes).

``revqom_nodes.ros.conversions`` turns ``revqom/msg/EncodedBEV`` into a ReceivedSlice; its
fields mirror the message (docs/wire-format.md), with the pose as sent (and as a 4x4 matrix
on first use) and the stamps as integer nanoseconds. ``signed_fields`` gives the fields a
slice's signature covers (``trust.SliceFields``). ``validation.FrameAssembly`` checks and
places the slices of a sweep and hands out AssembledMaps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from revqom_nodes.geometry import matrix_from_quaternion, quaternion_from_matrix
from revqom_nodes.trust.canonical import DIGEST_BYTES, SliceFields

NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000
SIGNATURE_BYTES = 64  # trust.signing: ECDSA P-256 r || s


@dataclass(frozen=True, eq=False)
class ReceivedSlice:
    """One EncodedBEV message (a slice of a map, or the whole map as its only slice), unchecked.

    stamp_ns: the LiDAR sweep time; position (x, y, z, metres) and orientation (quaternion
    x, y, z, w): ``lidar_pose`` as sent (``pose_fields`` makes them from a matrix), anything a
    sender wrote, NaN included (validation checks ``T_world_from_lidar``, made from them on
    first use: a receiver rejecting a slice before that never pays for it); payload:
    bytes-like; received_ns / source_ns: wall-clock receive and publish times (0 when unknown);
    slice_index, num_slices, first_cell, num_cells, interleave: the message's share of the map
    (cells in the cell order of ``interleave``, ``codec.slices.cell_order``; 1 is row-major over
    (H, W); num_cells None means H * W, the whole map in one message); signer_digest (8 bytes)
    and signature (64): the authenticator, all zeros when unsigned (docs/wire-format.md,
    "Signed slices").
    """

    agent_id: str
    role: int
    sequence: int
    stamp_ns: int
    frame_id: str
    position: tuple[float, float, float]
    orientation: tuple[float, float, float, float]
    height: int
    width: int
    cell_size_m: float
    codebook_size: int
    num_quantizers: int
    codebook_id: str
    encoding: int
    payload: Any
    received_ns: int = 0
    source_ns: int = 0
    slice_index: int = 0
    num_slices: int = 1
    first_cell: int = 0
    num_cells: int | None = None
    interleave: int = 1
    signer_digest: bytes = bytes(DIGEST_BYTES)
    signature: bytes = bytes(SIGNATURE_BYTES)

    def __post_init__(self) -> None:
        if self.num_cells is None:
            object.__setattr__(self, "num_cells", int(self.height) * int(self.width))

    @cached_property
    def T_world_from_lidar(self) -> np.ndarray:
        """(4, 4) float64 sender pose (all NaN for a non-finite or zero quaternion, see ``pose_matrix``)."""
        return pose_matrix(self.position, self.orientation)

    @property
    def payload_bytes(self) -> int:
        return len(self.payload)


@dataclass(frozen=True, eq=False)
class AssembledMap:
    """One agent's sweep as fusion takes it: the validated slices received so far, assembled.

    T_world_from_lidar: (4, 4) float64, a rigid transform (validated).
    """

    agent_id: str
    stamp_ns: int
    frame_id: str
    T_world_from_lidar: np.ndarray
    indices: np.ndarray  # (Q, H, W) int64, 0 in the cells not received
    valid: np.ndarray | None  # (H, W) bool cells received; None: every cell
    payload_bytes: int  # the payloads of the slices received, together
    decode_ms: float  # payload -> indices of those slices (validation), together

    @property
    def cells_received_fraction(self) -> float:
        """Share of the map's cells this map holds: 1.0 unless ``valid`` marks some missing."""
        return 1.0 if self.valid is None else float(self.valid.mean())

    def age_ms(self, reference_stamp_ns: int) -> float:
        """reference - this stamp, milliseconds (positive when this sweep is older)."""
        return (reference_stamp_ns - self.stamp_ns) / NS_PER_MS


def pose_matrix(
    position: tuple[float, float, float], quaternion: tuple[float, float, float, float]
) -> np.ndarray:
    """Position (x, y, z) and quaternion (x, y, z, w) -> (4, 4) float64 ``T_world_from_lidar``.

    A non-finite or zero quaternion, or a non-finite position, gives an all-NaN matrix, so
    that validation rejects the pose instead of silently using some rotation.
    """
    norm = math.sqrt(sum(float(v) * float(v) for v in quaternion))
    if not (math.isfinite(norm) and norm > 1e-6 and all(math.isfinite(float(v)) for v in position)):
        return np.full((4, 4), np.nan)
    return matrix_from_quaternion(quaternion, position)


def pose_fields(
    T_world_from_lidar: np.ndarray,
) -> tuple[tuple[float, float, float], tuple[float, float, float, float]]:
    """(4, 4) rigid transform -> position (x, y, z) and quaternion (x, y, z, w), as a message
    carries them (``geometry_msgs/Pose``); all NaN for a matrix of another shape."""
    T = np.asarray(T_world_from_lidar, dtype=np.float64)
    if T.shape != (4, 4):
        return (math.nan,) * 3, (math.nan,) * 4
    x, y, z = (float(v) for v in T[:3, 3])
    qx, qy, qz, qw = (float(v) for v in quaternion_from_matrix(T))
    return (x, y, z), (qx, qy, qz, qw)


def signed_fields(message: ReceivedSlice) -> SliceFields:
    """The fields of ``message`` that its signature covers (trust/canonical.py)."""
    sec, nanosec = divmod(int(message.stamp_ns), NS_PER_S)
    return SliceFields(
        stamp_sec=sec,
        stamp_nanosec=nanosec,
        frame_id=message.frame_id,
        agent_id=message.agent_id,
        role=int(message.role),
        sequence=int(message.sequence),
        position=message.position,
        orientation=message.orientation,
        height=int(message.height),
        width=int(message.width),
        cell_size_m=float(message.cell_size_m),
        codebook_size=int(message.codebook_size),
        num_quantizers=int(message.num_quantizers),
        codebook_id=message.codebook_id,
        encoding=int(message.encoding),
        slice_index=int(message.slice_index),
        num_slices=int(message.num_slices),
        first_cell=int(message.first_cell),
        num_cells=int(message.num_cells),
        interleave=int(message.interleave),
        payload=message.payload,
    )
