"""One synthetic cooperative frame: both sweeps, both poses and the labels, no file I/O.

The ego's rig: base = the ground point under the vehicle centre (x forward, z up); the
LiDAR 2 m above it; the NovAtel frame with x right, y forward (a 90-degree yaw from the
base), so that ``lidar_to_novatel`` is a real transform. All rotations are about z, so
(M, 7) boxes move exactly between frames.

Labels: a side labels a vehicle when its sweep has at least ``label_min_points`` points
on it (the infrastructure labels include the ego vehicle); the cooperative label holds the
other road users within ``label_range_m`` of the ego that either side labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from revqom_nodes.data.lidar import LidarModel, Sweep, cast
from revqom_nodes.data.synth_scene import LIDAR_HEIGHT_M, Scene, Vehicle, part_boxes
from revqom_nodes.geometry import invert, make_transform, rotation_z, transform_boxes

T_BASE_FROM_LIDAR = make_transform(rotation_z(np.radians(0.3)), [0.2, 0.0, LIDAR_HEIGHT_M])
T_BASE_FROM_NOVATEL = make_transform(rotation_z(-np.pi / 2), [-0.5, 0.0, 0.5])
T_NOVATEL_FROM_LIDAR = invert(T_BASE_FROM_NOVATEL) @ T_BASE_FROM_LIDAR
SWEEP_PERIOD_US = 100_000
GROUND_REFLECTIVITY = 0.12
STATIC_OWNER = -3


@dataclass
class SideLabels:
    """Boxes (M, 7) in the side's LiDAR frame, their types and LiDAR point counts."""

    boxes: np.ndarray
    kinds: list[str]
    points: np.ndarray


@dataclass
class RenderedFrame:
    """Everything one DAIR-V2X-C pair holds; poses are true poses in the world frame."""

    vehicle_us: int
    infrastructure_us: int
    vehicle_points: np.ndarray  # (N, 4) float32, vehicle LiDAR frame
    infrastructure_points: np.ndarray  # (N, 4) float32, virtual LiDAR frame
    T_world_from_novatel: np.ndarray
    T_world_from_infrastructure: np.ndarray
    vehicle_labels: SideLabels
    infrastructure_labels: SideLabels
    world_boxes: np.ndarray  # (K, 7) cooperative labels, world frame
    world_kinds: list[str]


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


def render_frame(
    scene: Scene,
    k: int,
    vehicle_model: LidarModel,
    infrastructure_model: LidarModel,
    *,
    seed: int,
    label_min_points: int,
    label_range_m: float,
    partner_delay_us: int | None = None,
) -> RenderedFrame:
    """Frame ``k`` of ``scene``: the ego sweep at the vehicle stamp, the pole sweep at its own
    clock, or ``partner_delay_us`` microseconds before the ego's (the traffic moves meanwhile;
    the cooperative labels stay at the ego's stamp)."""
    rng = np.random.default_rng([seed, scene.index, k])
    vehicle_us = scene.start_us + k * SWEEP_PERIOD_US + int(rng.integers(-300, 301))
    pole_jitter_us = int(rng.integers(-300, 301))  # drawn in any case: the sweeps' noise stays the same
    if partner_delay_us is None:
        infrastructure_us = (
            scene.start_us + scene.infrastructure_phase_us + k * SWEEP_PERIOD_US + pole_jitter_us
        )
    else:
        infrastructure_us = vehicle_us - partner_delay_us
    t_vehicle = (vehicle_us - scene.start_us) * 1e-6
    t_infrastructure = (infrastructure_us - scene.start_us) * 1e-6

    others = scene.vehicle_boxes(t_vehicle)
    kinds = [v.kind for v in scene.vehicles]
    T_scene_from_base = scene.T_scene_from_ego_base(t_vehicle)
    T_lidar_from_scene = invert(T_scene_from_base @ T_BASE_FROM_LIDAR)
    vehicle_sweep = _sweep(vehicle_model, T_lidar_from_scene, scene, scene.vehicles, others, rng)
    vehicle_labels, seen_by_vehicle = _side_labels(
        vehicle_sweep, others, kinds, T_lidar_from_scene, label_min_points
    )

    road_users = [*scene.vehicles, scene.ego]
    at_infra = np.vstack([scene.vehicle_boxes(t_infrastructure), scene.ego.box_at(t_infrastructure)])
    T_infra_from_scene = invert(scene.T_scene_from_infrastructure)
    infra_sweep = _sweep(infrastructure_model, T_infra_from_scene, scene, road_users, at_infra, rng)
    infra_labels, seen_by_infra = _side_labels(
        infra_sweep, at_infra, [*kinds, scene.ego.kind], T_infra_from_scene, label_min_points
    )

    near = np.hypot(*(others[:, :2] - T_scene_from_base[:2, 3]).T) <= label_range_m
    cooperative = near & (seen_by_vehicle | seen_by_infra[: len(others)])
    return RenderedFrame(
        vehicle_us=vehicle_us,
        infrastructure_us=infrastructure_us,
        vehicle_points=vehicle_sweep.points,
        infrastructure_points=infra_sweep.points,
        T_world_from_novatel=scene.T_world_from_scene @ T_scene_from_base @ T_BASE_FROM_NOVATEL,
        T_world_from_infrastructure=scene.T_world_from_scene @ scene.T_scene_from_infrastructure,
        vehicle_labels=vehicle_labels,
        infrastructure_labels=infra_labels,
        world_boxes=transform_boxes(scene.T_world_from_scene, others[cooperative]),
        world_kinds=[kinds[i] for i in np.flatnonzero(cooperative)],
    )
