"""``AgentFrame``: one agent's encoded sweep as the runtime sees it, without ROS types.

``revqom_nodes.ros.conversions`` turns ``revqom/msg/EncodedBEV`` into this and back; the
fields mirror the message (docs/wire-format.md), with the pose as a 4x4 matrix and the
stamps as integer nanoseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from revqom_nodes.data.transforms import matrix_from_quaternion

NS_PER_MS = 1_000_000


@dataclass
class AgentFrame:
    """One EncodedBEV message.

    stamp_ns: the LiDAR sweep time; T_world_from_lidar: (4, 4) float64 sender pose (may be
    anything a sender wrote, NaN included: validation checks it); payload: bytes-like;
    received_ns / source_ns: wall-clock receive and publish times (0 when unknown).
    """

    agent_id: str
    role: int
    sequence: int
    stamp_ns: int
    frame_id: str
    T_world_from_lidar: np.ndarray
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
    indices: np.ndarray | None = field(default=None, repr=False)  # (Q, H, W) once validated
    decode_ms: float = 0.0  # payload -> indices, measured by validation

    @property
    def payload_bytes(self) -> int:
        return len(self.payload)

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
    q = np.asarray(quaternion, dtype=np.float64)
    t = np.asarray(position, dtype=np.float64)
    norm = float(np.linalg.norm(q))
    if not (np.isfinite(norm) and norm > 1e-6 and np.isfinite(t).all()):
        return np.full((4, 4), np.nan)
    return matrix_from_quaternion(q, t)
