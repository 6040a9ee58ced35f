"""Canonical signed bytes of one EncodedBEV slice (docs/wire-format.md, "Signed slices").

Every message field except the authenticator's signature, in message order, plus a domain
prefix, a layout version and the signer's certificate digest: fixed-width little-endian
integers and floats, strings and the payload prefixed by their length (uint32). Two different
slices (or the same slice from another signer) never have the same canonical bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

DOMAIN = b"revqom EncodedBEV slice\x00"  # 24 bytes; no other signed object of revqom starts so
VERSION = 1
DIGEST_BYTES = 8  # HashedId8 of the signer's certificate (certificates.certificate_digest)

_HEAD = struct.Struct(f"<{len(DOMAIN)}sH{DIGEST_BYTES}siI")  # domain, version, digest, stamp
_POSE_GRID_CODEC = struct.Struct("<BI7dHHfHB")  # role, sequence, pose, grid, K, Q
_SLICE = struct.Struct("<BHHIIB")  # encoding, slice_index, num_slices, first_cell, num_cells, interleave
_LENGTH = struct.Struct("<I")


@dataclass(frozen=True)
class SliceFields:
    """The fields of one EncodedBEV message that a signature covers, in message order
    (msg/EncodedBEV.msg; types in brackets are the message's)."""

    stamp_sec: int  # header.stamp.sec [int32], s
    stamp_nanosec: int  # header.stamp.nanosec [uint32], ns
    frame_id: str  # header.frame_id [string]
    agent_id: str  # [string]
    role: int  # [uint8] certificates.Role
    sequence: int  # [uint32]
    position: tuple[float, float, float]  # lidar_pose.position x, y, z [float64], m
    orientation: tuple[float, float, float, float]  # lidar_pose.orientation x, y, z, w [float64]
    height: int  # [uint16] H, cells
    width: int  # [uint16] W, cells
    cell_size_m: float  # [float32], m
    codebook_size: int  # [uint16] K
    num_quantizers: int  # [uint8] Q
    codebook_id: str  # [string]
    encoding: int  # [uint8]
    slice_index: int  # [uint16]
    num_slices: int  # [uint16]
    first_cell: int  # [uint32]
    num_cells: int  # [uint32]
    interleave: int  # [uint8]
    payload: bytes | bytearray | memoryview  # [uint8[]] any bytes-like object

    @property
    def stamp_ns(self) -> int:
        """header.stamp in nanoseconds since the epoch of the sender's clock."""
        return self.stamp_sec * 1_000_000_000 + self.stamp_nanosec


def _string(text: str) -> bytes:
    data = text.encode("utf-8")
    return _LENGTH.pack(len(data)) + data


def canonical_bytes(fields: SliceFields, signer_digest: bytes) -> bytes:
    """The bytes a slice's signature covers: ``DOMAIN``, ``VERSION`` (uint16), ``signer_digest``
    (8 bytes), then every field of ``fields`` in order. Raises ``ValueError`` (``struct.error``
    or ``UnicodeEncodeError``) for a value its message type cannot hold."""
    if len(signer_digest) != DIGEST_BYTES:
        raise ValueError(f"signer digest must be {DIGEST_BYTES} bytes, got {len(signer_digest)}")
    try:
        return b"".join(
            (
                _HEAD.pack(DOMAIN, VERSION, bytes(signer_digest), fields.stamp_sec, fields.stamp_nanosec),
                _string(fields.frame_id),
                _string(fields.agent_id),
                _POSE_GRID_CODEC.pack(
                    fields.role,
                    fields.sequence,
                    *fields.position,
                    *fields.orientation,
                    fields.height,
                    fields.width,
                    fields.cell_size_m,
                    fields.codebook_size,
                    fields.num_quantizers,
                ),
                _string(fields.codebook_id),
                _SLICE.pack(
                    fields.encoding,
                    fields.slice_index,
                    fields.num_slices,
                    fields.first_cell,
                    fields.num_cells,
                    fields.interleave,
                ),
                _LENGTH.pack(len(fields.payload)),
                fields.payload,
            )
        )
    except struct.error as error:
        raise ValueError(f"slice field out of range for its message type: {error}") from error
