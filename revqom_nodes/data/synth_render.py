"""One synthetic cooperative frame: every agent's sweep, pose and labels, no file I/O.

The ego's rig: base = the ground point under the vehicle centre (x forward, z up); the
LiDAR 2 m above it; the NovAtel frame with x right, y forward (a 90-degree yaw from the
base), so that ``lidar_to_novatel`` is a real transform. All rotations are about z, so
(M, 7) boxes move exactly between frames.

Labels: a side labels a vehicle when its sweep has at least ``label_min_points`` points
on it (the infrastructure labels include the ego vehicle, a connected vehicle's the ego too);
the cooperative label holds every vehicle within ``label_range_m`` of the ego that any agent
labels, but never the body of the vehicle whose view it is: with connected vehicles, every
connected vehicle's body (the ego's included) is a label tagged with its agent id, and each
ego's ground truth leaves its own out (``CooperativeFrame.as_ego``); in the 1 + 1 case the
ego's body is not written at all (DAIR-V2X-C's labels).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from revqom_nodes.data.lidar import LidarModel, Sweep, cast
from revqom_nodes.data.synth_scene import LIDAR_HEIGHT_M, Pole, Scene, Vehicle, base_pose, part_boxes
from revqom_nodes.geometry import invert, make_transform, rotation_z, transform_boxes

T_BASE_FROM_LIDAR = make_transform(rotation_z(np.radians(0.3)), [0.2, 0.0, LIDAR_HEIGHT_M])
T_BASE_FROM_NOVATEL = make_transform(rotation_z(-np.pi / 2), [-0.5, 0.0, 0.5])
T_NOVATEL_FROM_LIDAR = invert(T_BASE_FROM_NOVATEL) @ T_BASE_FROM_LIDAR
SWEEP_PERIOD_US = 100_000
GROUND_REFLECTIVITY = 0.12
STATIC_OWNER = -3
INFRASTRUCTURE_STREAM, VEHICLE_STREAM = 1, 2  # random streams of the agents after the first two


@dataclass
class SideLabels:
    """Boxes (M, 7) in the side's LiDAR frame, their types and LiDAR point counts."""

    boxes: np.ndarray
    kinds: list[str]
    points: np.ndarray


@dataclass
class RenderedSweep:
    """One agent's sweep: its stamp, points (N, 4) float32 in its LiDAR frame, the true world
    pose of the frame its world calibration names (a vehicle's NovAtel frame, a pole's virtual
    LiDAR frame) and its single-side labels."""

    stamp_us: int
    points: np.ndarray
    T_world_from_calibrated: np.ndarray
    labels: SideLabels


@dataclass
class RenderedFrame:
    """Everything one cooperative frame holds: ``vehicles[0]`` is the ego, then the connected
    vehicles; ``infrastructures`` follow ``Scene.poles``."""

    vehicles: list[RenderedSweep]
    infrastructures: list[RenderedSweep]
    world_boxes: np.ndarray  # (K, 7) cooperative labels, world frame
    world_kinds: list[str]
    world_agents: list[int | None]  # per label: the connected vehicle whose body it is (0: the ego)


def _sweep(
    model: LidarModel,
    T_sensor_from_scene: np.ndarray,
    scene: Scene,
    vehicles: list[Vehicle],
    boxes: np.ndarray,
    rng: np.random.Generator,
) -> Sweep:
    """Cast one sweep of a levelled sensor at ``inv(T_sensor_from_scene)`` against the scene."""
    parts, owners, refl = part_boxes(vehicles, boxes)
    all_boxes = transform_boxes(T_sensor_from_scene, np.concatenate([parts, scene.static_boxes]))
    owners = np.concatenate([owners, np.full(len(scene.static_boxes), STATIC_OWNER)])
    refl = np.concatenate([refl, scene.static_reflectivity])
    ground_z = float(T_sensor_from_scene[2, 3])
    return cast(
        model, all_boxes, owners, refl, ground_z=ground_z, ground_reflectivity=GROUND_REFLECTIVITY, rng=rng
    )


def _side_labels(
    sweep: Sweep, boxes_scene: np.ndarray, kinds: list[str], T_sensor_from_scene: np.ndarray, min_points: int
) -> tuple[SideLabels, np.ndarray]:
    """The boxes a sweep labels, and which of ``boxes_scene`` (M,) bool they are."""
    counts = np.bincount(sweep.owner[sweep.owner >= 0], minlength=len(boxes_scene))
    seen = counts >= min_points
    return SideLabels(
        transform_boxes(T_sensor_from_scene, boxes_scene[seen]),
        [kinds[i] for i in np.flatnonzero(seen)],
        counts[seen],
    ), seen


def _vehicle_sweep(
    scene: Scene,
    model: LidarModel,
    user: int,
    t_s: float,
    rng: np.random.Generator,
    label_min_points: int,
) -> tuple[Sweep, SideLabels, np.ndarray, np.ndarray]:
    """Sweep of road user ``user`` (an index into ``[*scene.vehicles, scene.ego]``) at ``t_s``, cast
    against every other road user -> sweep, labels, which road users it labels (V + 1,) bool,
    ``T_scene_from_base``."""
    users = [*scene.vehicles, scene.ego]
    boxes = np.vstack([scene.vehicle_boxes(t_s), scene.ego.box_at(t_s)])
    others = [i for i in range(len(users)) if i != user]
    T_scene_from_base = base_pose(users[user], t_s)
    T_lidar_from_scene = invert(T_scene_from_base @ T_BASE_FROM_LIDAR)
    sweep = _sweep(model, T_lidar_from_scene, scene, [users[i] for i in others], boxes[others], rng)
    sweep.owner = np.where(sweep.owner >= 0, np.asarray(others)[np.maximum(sweep.owner, 0)], sweep.owner)
    labels, seen = _side_labels(sweep, boxes, [u.kind for u in users], T_lidar_from_scene, label_min_points)
    return sweep, labels, seen, T_scene_from_base


def _pole_sweep(
    scene: Scene, pole: Pole, model: LidarModel, t_s: float, rng: np.random.Generator, label_min_points: int
) -> tuple[Sweep, SideLabels, np.ndarray]:
    """Sweep of ``pole`` at ``t_s`` -> sweep, labels, which road users it labels (V + 1,) bool."""
    users = [*scene.vehicles, scene.ego]
    boxes = np.vstack([scene.vehicle_boxes(t_s), scene.ego.box_at(t_s)])
    T_infra_from_scene = invert(pole.T_scene_from_infrastructure)
    sweep = _sweep(model, T_infra_from_scene, scene, users, boxes, rng)
    labels, seen = _side_labels(sweep, boxes, [u.kind for u in users], T_infra_from_scene, label_min_points)
    return sweep, labels, seen


def render_frame(
    scene: Scene,
    k: int,
    vehicle_model: LidarModel,
    infrastructure_models: list[LidarModel],
    *,
    seed: int,
    label_min_points: int,
    label_range_m: float,
    partner_delay_us: int | None = None,
) -> RenderedFrame:
    """Frame ``k`` of ``scene``: the ego sweep at the vehicle stamp, every partner's (connected
    vehicles, then ``scene.poles`` with ``infrastructure_models``) at its own clock, or
    ``partner_delay_us`` microseconds before the ego's (the traffic moves meanwhile; the
    cooperative labels stay at the ego's stamp). The ego and the first pole draw from the
    frame's random stream as with one partner, each further agent from a stream of its own."""
    rng = np.random.default_rng([seed, scene.index, k])
    vehicle_us = scene.start_us + k * SWEEP_PERIOD_US + int(rng.integers(-300, 301))
    pole_jitter_us = int(rng.integers(-300, 301))  # drawn in any case: the sweeps' noise stays the same

    def stamp_us(phase_us: int, jitter_us: int) -> int:
        if partner_delay_us is None:
            return scene.start_us + phase_us + k * SWEEP_PERIOD_US + jitter_us
        return vehicle_us - partner_delay_us

    def seconds(us: int) -> float:
        return (us - scene.start_us) * 1e-6

    W = scene.T_world_from_scene
    ego = len(scene.vehicles)
    ego_sweep, ego_labels, seen_by_any, T_scene_from_base = _vehicle_sweep(
        scene, vehicle_model, ego, seconds(vehicle_us), rng, label_min_points
    )
    vehicles = [
        RenderedSweep(vehicle_us, ego_sweep.points, W @ T_scene_from_base @ T_BASE_FROM_NOVATEL, ego_labels)
    ]
    infrastructures: list[RenderedSweep] = []
    for j, (pole, model) in enumerate(zip(scene.poles, infrastructure_models, strict=True)):
        own_rng = rng if j == 0 else np.random.default_rng([seed, scene.index, k, INFRASTRUCTURE_STREAM, j])
        jitter_us = pole_jitter_us if j == 0 else int(own_rng.integers(-300, 301))
        stamp = stamp_us(pole.phase_us, jitter_us)
        sweep, labels, seen = _pole_sweep(scene, pole, model, seconds(stamp), own_rng, label_min_points)
        infrastructures.append(
            RenderedSweep(stamp, sweep.points, W @ pole.T_scene_from_infrastructure, labels)
        )
        seen_by_any |= seen
    for j, connected in enumerate(scene.connected, start=1):
        own_rng = np.random.default_rng([seed, scene.index, k, VEHICLE_STREAM, j])
        stamp = stamp_us(connected.phase_us, int(own_rng.integers(-300, 301)))
        sweep, labels, seen, T_base = _vehicle_sweep(
            scene, vehicle_model, connected.index, seconds(stamp), own_rng, label_min_points
        )
        vehicles.append(RenderedSweep(stamp, sweep.points, W @ T_base @ T_BASE_FROM_NOVATEL, labels))
        seen_by_any |= seen

    users = [*scene.vehicles, scene.ego]
    boxes = np.vstack([scene.vehicle_boxes(seconds(vehicle_us)), scene.ego.box_at(seconds(vehicle_us))])
    near = np.hypot(*(boxes[:, :2] - T_scene_from_base[:2, 3]).T) <= label_range_m
    cooperative = near & seen_by_any
    cooperative[ego] &= bool(scene.connected)  # 1 + 1: the ego's body is not a label (DAIR-V2X-C)
    body_of = {c.index: j for j, c in enumerate(scene.connected, start=1)} | {ego: 0}
    chosen = np.flatnonzero(cooperative)
    return RenderedFrame(
        vehicles=vehicles,
        infrastructures=infrastructures,
        world_boxes=transform_boxes(scene.T_world_from_scene, boxes[chosen]),
        world_kinds=[users[i].kind for i in chosen],
        world_agents=[body_of.get(int(i)) for i in chosen],
    )
