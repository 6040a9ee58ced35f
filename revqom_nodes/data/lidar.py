"""Simulated LiDAR: beam patterns and vectorized ray casting (numpy only).

A sweep is cast in the sensor's *levelled* frame L (origin at the sensor, x-y plane
parallel to the flat ground, z up): the vehicle LiDAR frame, or the infrastructure's
"virtual LiDAR" frame. The world holds a ground plane ``z = ground_z`` and boxes
rotated about z. Rays are kept sorted by azimuth so that each box is tested only
against the contiguous run of rays inside its azimuth span (slab method, vectorized
over those rays); the nearest hit wins, so occlusion is physical.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

GROUND, MISS = -1, -2
_CORNER_SIGNS = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, -1.0], [-1.0, 1.0]])


@dataclass(frozen=True)
class LidarModel:
    """Beam pattern (degrees, in the sensor's own frame) and the sensor's imperfections.

    ``pitch_deg`` tilts the whole pattern down about the sensor's y axis (a pole-mounted
    sensor looking into the intersection).
    """

    azimuths_deg: tuple[float, ...]
    elevations_deg: tuple[float, ...]
    pitch_deg: float = 0.0
    min_range_m: float = 1.0
    max_range_m: float = 100.0
    range_noise_m: float = 0.02
    dropout: float = 0.05

    @cached_property
    def rays(self) -> tuple[np.ndarray, np.ndarray]:
        """Unit directions (R, 3) in L sorted by azimuth, and their azimuths (R,) in [-pi, pi)."""
        az = np.radians(np.asarray(self.azimuths_deg))[None, :]
        el = np.radians(np.asarray(self.elevations_deg))[:, None]
        d = np.stack(
            np.broadcast_arrays(np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)), axis=-1
        ).reshape(-1, 3)
        pitch = np.radians(self.pitch_deg)
        tilt = np.array([[np.cos(pitch), 0, np.sin(pitch)], [0, 1, 0], [-np.sin(pitch), 0, np.cos(pitch)]])
        d = d @ tilt.T
        azimuth = np.arctan2(d[:, 1], d[:, 0])
        order = np.argsort(azimuth, kind="stable")
        return np.ascontiguousarray(d[order]), azimuth[order]


def vehicle_lidar(
    *, beams: int = 40, azimuth_step_deg: float = 0.3, max_range_m: float = 100.0
) -> LidarModel:
    """A 360-degree spinning LiDAR, elevations -25..+15 deg, denser near the horizon."""
    coarse_low = max(beams // 4, 1)
    coarse_high = max(beams // 7, 1)
    fine = max(beams - coarse_low - coarse_high, 1)
    elevations = np.concatenate(
        [
            np.linspace(-25.0, -7.0, coarse_low, endpoint=False),
            np.linspace(-7.0, 2.0, fine, endpoint=False),
            np.linspace(2.0, 15.0, coarse_high),
        ]
    )
    azimuths = np.arange(-180.0, 180.0, azimuth_step_deg)
    return LidarModel(tuple(azimuths), tuple(elevations), max_range_m=max_range_m)


def infrastructure_lidar(
    *, rings: int = 150, azimuth_step_deg: float = 0.25, pitch_deg: float = 18.0, max_range_m: float = 120.0
) -> LidarModel:
    """A pole-mounted LiDAR: dense rings over 100 deg x 40 deg, tilted down by ``pitch_deg``."""
    azimuths = np.arange(-50.0, 50.0 + 1e-9, azimuth_step_deg)
    elevations = np.linspace(-20.0, 20.0, rings)
    return LidarModel(tuple(azimuths), tuple(elevations), pitch_deg=pitch_deg, max_range_m=max_range_m)


def _slab(origin: float, half: float, direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Entry and exit distances of rays (origin + t * direction) through the slab |u| <= half."""
    t1 = (-half - origin) / direction
    t2 = (half - origin) / direction
    return np.minimum(t1, t2), np.maximum(t1, t2)


@dataclass
class Sweep:
    """Cast result: points (N, 4) float32 ``x, y, z, intensity`` in L; ``owner`` (N,) int64
    (box owner id, ``GROUND`` for the ground)."""

    points: np.ndarray
    owner: np.ndarray


def _wrap(angle: np.ndarray) -> np.ndarray:
    return (angle + np.pi) % (2 * np.pi) - np.pi


def _box_culling(boxes: np.ndarray, azimuth: np.ndarray) -> dict[str, list]:
    """Per box (B, 7): the two runs of azimuth-sorted rays it can hit, and conservative
    bounds on the rays' z direction and on the hit distance (rays that already hit
    something closer are skipped)."""
    x, y, z, l, w, h, yaw = boxes.T
    c, s = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
    u, v = _CORNER_SIGNS[:, 0] * l[:, None] / 2, _CORNER_SIGNS[:, 1] * w[:, None] / 2
    ref = np.arctan2(y, x)
    rel = _wrap(np.arctan2(u * s + v * c + y[:, None], u * c - v * s + x[:, None]) - ref[:, None])
    lo, hi = ref + rel.min(axis=1), ref + rel.max(axis=1)
    wrapped = (lo < -np.pi) | (hi >= np.pi)
    surrounds = rel.max(axis=1) - rel.min(axis=1) >= np.pi - 1e-6  # the footprint holds the sensor
    start = np.where(surrounds, 0, np.searchsorted(azimuth, _wrap(lo), "left"))
    stop = np.where(surrounds | wrapped, azimuth.size, np.searchsorted(azimuth, hi, "right"))
    stop_2 = np.where(wrapped & ~surrounds, np.searchsorted(azimuth, _wrap(hi), "right"), 0)

    reach = 0.5 * np.hypot(l, w)
    r_near, r_far = np.maximum(np.hypot(x, y) - reach, 0.0), np.hypot(x, y) + reach
    z_lo, z_hi = z - h / 2, z + h / 2
    sin_lo = np.sin(np.arctan2(z_lo, np.where(z_lo <= 0, r_near, r_far))) - 1e-9
    sin_hi = np.sin(np.arctan2(z_hi, np.where(z_hi >= 0, r_near, r_far))) + 1e-9
    dz_near = np.where((z_lo <= 0) & (z_hi >= 0), 0.0, np.minimum(np.abs(z_lo), np.abs(z_hi)))
    return {
        "start": start.tolist(),
        "stop": stop.tolist(),
        "stop_2": stop_2.tolist(),
        "r_near": r_near.tolist(),
        "sin_lo": sin_lo.tolist(),
        "sin_hi": sin_hi.tolist(),
        "t_near": np.hypot(r_near, dz_near).tolist(),
    }


def cast(
    model: LidarModel,
    boxes: np.ndarray,
    owners: np.ndarray,
    reflectivity: np.ndarray,
    *,
    ground_z: float,
    ground_reflectivity: float,
    rng: np.random.Generator,
) -> Sweep:
    """Cast one sweep against the ground plane and (B, 7) boxes given in L.

    ``owners`` (B,) int labels each box (several boxes may share an owner);
    ``reflectivity`` (B,) in 0..1. Rays that hit nothing within range give no point.
    """
    d, azimuth = model.rays
    d_x, d_y, d_z = (np.ascontiguousarray(d[:, k]) for k in range(3))
    t_best = np.full(len(d), np.inf)
    owner = np.full(len(d), MISS, dtype=np.int64)
    refl = np.zeros(len(d))
    cos_inc = np.zeros(len(d))
    down = d_z < -1e-9
    t_best[down] = ground_z / d_z[down]
    owner[down] = GROUND
    refl[down] = ground_reflectivity
    cos_inc[down] = -d_z[down]

    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    cull = _box_culling(boxes, azimuth)
    for b, (cx, cy, cz, l, w, h, yaw) in enumerate(boxes.tolist()):
        if cull["r_near"][b] > model.max_range_m:
            continue
        c, s = np.cos(yaw), np.sin(yaw)
        ox, oy, oz = -(cx * c + cy * s), cx * s - cy * c, -cz  # sensor origin in the box frame
        for run in (slice(cull["start"][b], cull["stop"][b]), slice(0, cull["stop_2"][b])):
            if run.stop <= run.start:
                continue
            dz = d_z[run]
            candidates = (
                (dz >= cull["sin_lo"][b]) & (dz <= cull["sin_hi"][b]) & (t_best[run] > cull["t_near"][b])
            )
            idx = np.flatnonzero(candidates) + run.start
            if idx.size == 0:
                continue
            ex, ey, lz = d_x[idx], d_y[idx], d_z[idx]
            lx, ly = ex * c + ey * s, ey * c - ex * s
            with np.errstate(divide="ignore", invalid="ignore"):
                slabs = [
                    _slab(o, half_size, v)
                    for o, half_size, v in ((ox, l / 2, lx), (oy, w / 2, ly), (oz, h / 2, lz))
                ]
            t_near = np.maximum(np.maximum(slabs[0][0], slabs[1][0]), slabs[2][0])
            t_far = np.minimum(np.minimum(slabs[0][1], slabs[1][1]), slabs[2][1])
            better = (t_near <= t_far) & (t_near > model.min_range_m) & (t_near < t_best[idx])
            if not better.any():
                continue
            hit, t_hit = idx[better], t_near[better]
            on_x, on_y = slabs[0][0][better] == t_hit, slabs[1][0][better] == t_hit
            t_best[hit] = t_hit
            owner[hit] = owners[b]
            refl[hit] = reflectivity[b]
            cos_inc[hit] = np.abs(np.where(on_x, lx[better], np.where(on_y, ly[better], lz[better])))

    keep = (
        (owner != MISS)
        & (t_best <= model.max_range_m)
        & (t_best >= model.min_range_m)
        & (cos_inc > 0.02)
        & (rng.random(len(d)) >= model.dropout)
    )
    t = t_best[keep] + rng.normal(0.0, model.range_noise_m, int(keep.sum()))
    intensity = 255.0 * refl[keep] * (0.3 + 0.7 * cos_inc[keep]) * np.exp(-t / 150.0)
    intensity = np.clip(np.round(intensity + rng.normal(0.0, 1.5, t.size)), 0, 255)
    points = np.column_stack([d[keep] * t[:, None], intensity]).astype(np.float32)
    return Sweep(points, owner[keep])
