"""Partners under V2X error: the pose noise draw ``revqom eval``, the replay and training share,
and the delay schedule ``revqom eval``, the demo and training share.

The pose a partner transmits is off by Gaussian noise, std ``xy_m`` metres on the world x and y
of its LiDAR and ``yaw_deg`` degrees on its yaw, turned about its own origin (as V2X-ViT's and
CoAlign's protocol perturb x, y and yaw). The draw of a cooperative frame depends only on the
seed and the frame's index in the reader (``DairV2XReader``; a bag lists its frames in that
order, ``data.bag.bag_frames``): standard normals, one row (x, y, yaw) per partner in the
frame's agent order, scaled by the stds (``pose_errors``). So the same frame gets the same error
direction at every noise level, delay and model, offline and live.

``revqom eval --pose-noise`` (``evaluation.robustness.PerturbedFrames``) noises the partners of
each evaluated ego frame with that frame's draw; the replay (``replay.pose_noise``,
``PartnerPoseNoise``) noises each partner pose message of the bag with the draw of the frame
the sweep belongs to. Without delay both are the same poses. With ``--delay-ms`` eval lends an
ego frame the partners of an older frame under the ego frame's draw; the replay cannot know
which ego frame a late partner sweep will meet, so it keeps the sweep's own frame's draw.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from revqom_nodes.geometry import make_transform, rotation_z

SWEEP_PERIOD_MS = 100.0  # DAIR-V2X-C and the synthetic data sweep at 10 Hz


def noisy_pose(T_world_from_lidar: np.ndarray, dx_m: float, dy_m: float, dyaw_deg: float) -> np.ndarray:
    """(4, 4) pose -> the same LiDAR moved by (dx_m, dy_m) in the world and turned by ``dyaw_deg``
    about its own vertical axis (its position unchanged by the turn)."""
    T = np.asarray(T_world_from_lidar, dtype=np.float64)
    return make_transform(rotation_z(np.radians(dyaw_deg)) @ T[:3, :3], T[:3, 3] + [dx_m, dy_m, 0.0])


def pose_errors(noise_seed: int, frame_index: int, partners: int, xy_m: float, yaw_deg: float) -> np.ndarray:
    """The pose errors of frame ``frame_index``'s ``partners`` -> (partners, 3) float64: dx_m, dy_m
    (world) and dyaw_deg of each, in the frame's agent order (module docstring)."""
    draws = np.random.default_rng([noise_seed, frame_index]).standard_normal((partners, 3))
    return draws * np.array([xy_m, xy_m, yaw_deg])


class PartnerPoseNoise:
    """The replay's pose noise: a partner's pose message -> its transmitted (noisy) pose.

    ``frames``: per frame of the reader (``data.bag.bag_frames``), (agent id, sweep stamp in
    microseconds) of each of its agents, the ego first; the others are its partners. A sweep is
    keyed by (agent id, stamp); one that several frames list (a roadside sweep paired twice) takes
    the first frame's draw, since it is sent once.
    """

    def __init__(
        self, frames: Sequence[Sequence[tuple[str, int]]], *, xy_m: float, yaw_deg: float, noise_seed: int
    ) -> None:
        self.xy_m, self.yaw_deg, self.noise_seed = xy_m, yaw_deg, noise_seed
        self._rows: dict[tuple[str, int], tuple[int, int, int]] = {}  # sweep -> (frame, row, partners)
        for index, agents in enumerate(frames):
            partners = agents[1:]
            for row, (agent_id, stamp_us) in enumerate(partners):
                self._rows.setdefault((agent_id, stamp_us * 1000), (index, row, len(partners)))

    def pose(self, agent_id: str, stamp_ns: int, T_world_from_lidar: np.ndarray) -> np.ndarray:
        """(4, 4) true pose of ``agent_id``'s sweep stamped ``stamp_ns`` -> the pose it transmits:
        noised when a frame lists the sweep as a partner's, else as given."""
        found = self._rows.get((agent_id, stamp_ns))
        if found is None:
            return np.asarray(T_world_from_lidar, dtype=np.float64)
        index, row, partners = found
        errors = pose_errors(self.noise_seed, index, partners, self.xy_m, self.yaw_deg)
        return noisy_pose(T_world_from_lidar, *errors[row])


class PartnerSchedule(NamedTuple):
    """Which pair lends its partners to which ego frame (indices into the reader's frames)."""

    pairs: list[tuple[int, int]]  # (ego frame, partner frame)
    dropped: int  # ego frames without a pair k sweeps earlier
    ages_ms: list[float]  # per pair: ego sweep stamp minus partner sweep stamp


def partner_schedule(stamps_us: Sequence[tuple[int, ...]], delay_ms: float) -> PartnerSchedule:
    """(vehicle, partner, ...) sweep stamps (microseconds) of every frame -> the pairs for
    ``delay_ms``: each ego frame with the pair whose vehicle sweep lies k = delay_ms /
    ``SWEEP_PERIOD_MS`` sweeps (the nearest whole number, halves up) before its own, within half a
    period (the same recording, whatever the reader's order); an ego frame without one is dropped.
    k = 0 pairs every frame with itself."""
    if delay_ms < 0:
        raise ValueError(f"delay_ms must be >= 0, got {delay_ms}")
    k = int(delay_ms / SWEEP_PERIOD_MS + 0.5)
    vehicle = np.array([s[0] for s in stamps_us], dtype=np.int64)
    order = np.argsort(vehicle, kind="stable")
    ordered = vehicle[order]
    half_period_us = SWEEP_PERIOD_MS * 500.0
    pairs, ages = [], []
    for i, stamp in enumerate(vehicle):
        j = i
        if k > 0:
            target = int(stamp) - round(k * SWEEP_PERIOD_MS * 1000)
            at = int(np.searchsorted(ordered, target))
            near = [c for c in (at - 1, at) if 0 <= c < len(ordered)]
            best = min(near, key=lambda c: abs(int(ordered[c]) - target))
            if abs(int(ordered[best]) - target) >= half_period_us:
                continue
            j = int(order[best])
        pairs.append((i, j))
        ages.append((int(stamp) - int(stamps_us[j][1])) / 1000.0)
    return PartnerSchedule(pairs, len(stamps_us) - len(pairs), ages)
