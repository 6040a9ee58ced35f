"""``PoseBuffer``: an agent's recent poses, looked up at a sweep's stamp.

The pose of a sweep is the newest pose stamped at or before the sweep (the one with the
same stamp when the pose source publishes one per sweep). Clouds and their poses arrive
on separate topics in either order, so the agent waits until ``settled(stamp)`` (a pose at
or after the stamp has arrived: the choice can no longer change) or a short timeout.
``static_pose`` reads the fixed pose of a roadside unit without a pose topic (``pose.static``).
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np

from revqom_nodes.runtime.errors import RuntimeConfigError
from revqom_nodes.runtime.frames import NS_PER_MS


def static_pose(values: list[float]) -> np.ndarray | None:
    """``pose.static``: 16 finite floats, row-major -> (4, 4) float64 T_world_from_lidar; [] -> None
    (the pose comes from a topic); RuntimeConfigError for anything else."""
    if not values:
        return None
    try:
        T = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise RuntimeConfigError(f"pose.static must hold 16 numbers, got {values!r}") from None
    if T.size != 16 or not np.isfinite(T).all():
        raise RuntimeConfigError(f"pose.static needs 16 finite floats (row-major 4x4), got {len(T)}")
    return T.reshape(4, 4)


class PoseBuffer:
    """Thread-safe, bounded store of (stamp ns, (4, 4) T_world_from_lidar)."""

    def __init__(self, *, capacity: int = 50, max_age_ms: float = 200.0) -> None:
        self._poses: deque[tuple[int, np.ndarray]] = deque(maxlen=capacity)
        self.max_age_ns = int(max_age_ms * NS_PER_MS)
        self._lock = threading.Lock()

    def add(self, stamp_ns: int, T_world_from_lidar: np.ndarray) -> None:
        """Keep a pose; a pose older than the newest held one restarts the buffer (a looping replay)."""
        with self._lock:
            if self._poses and stamp_ns < self._poses[-1][0]:
                self._poses.clear()
            self._poses.append((stamp_ns, np.asarray(T_world_from_lidar, dtype=np.float64)))

    def settled(self, stamp_ns: int) -> bool:
        """Whether a pose stamped at or after ``stamp_ns`` has arrived."""
        with self._lock:
            return bool(self._poses) and self._poses[-1][0] >= stamp_ns

    def lookup(self, stamp_ns: int) -> np.ndarray | None:
        """The newest pose at or before ``stamp_ns`` and at most ``max_age_ms`` older; None if none."""
        with self._lock:
            for pose_stamp, T in reversed(self._poses):
                if pose_stamp <= stamp_ns:
                    return T if stamp_ns - pose_stamp <= self.max_age_ns else None
        return None
