"""Synthetic urban intersection scenes: buildings, street furniture, traffic and sensors.

Scene frame S: the intersection centre at the origin, flat ground at z = 0, the main
road along x (two lanes each way, parking on both sides), the cross road along y (one
lane each way, parking). Buildings stand on the four block corners. The main road
has a green light: its traffic moves at a constant speed per lane; the cross road
waits in queues at its stop lines, and a few cars leave the intersection on it. The
ego vehicle drives east on the inner lane towards the intersection (a short sequence is
centred 30-70 m before it; one of more than 80 m of driving goes through it), often
behind a vehicle and beside a van, truck or bus. The infrastructure LiDAR stands on a
pole at one corner, looking into the intersection.

More agents (``add_agents``, drawn from a random stream of their own so that the 1 + 1
scene stays the same): connected vehicles are road users of the traffic near the ego, with
the ego's LiDAR rig and a clock of their own; further roadside units stand on the other
corners.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from revqom_nodes.geometry import make_transform, rotation_z

# Road geometry (metres, scene frame).
LANE_M = 3.5
MAIN_CURB_Y, CROSS_CURB_X = 9.5, 6.0
MAIN_PARKING_Y, CROSS_PARKING_X = 8.3, 4.8
MAIN_STOP_X, CROSS_STOP_Y = 8.0, 12.0
BUILDING_Y, BUILDING_X = 14.0, 10.0
EGO_LANE_Y = -LANE_M / 2
LIDAR_HEIGHT_M = 2.0
LEAD_VEHICLE_PROBABILITY = 0.7
SIDE_VEHICLE_PROBABILITY = 0.5
# The pole stands most often on a corner across the main road from the ego's lane (north):
# from there it looks over the traffic next to the ego, into the arms the ego sees least.
POLE_CORNERS: tuple[tuple[float, float], ...] = ((-1.0, 1.0), (1.0, 1.0), (-1.0, -1.0), (1.0, -1.0))
POLE_CORNER_WEIGHTS: tuple[float, ...] = (0.35, 0.35, 0.15, 0.15)
CONNECTED_RANGE_M = 60.0  # connected vehicles are drawn among the moving road users this near the ego

# (type, probability, length, width, height ranges in metres)
VEHICLE_SIZES: dict[str, tuple[float, tuple[float, float], tuple[float, float], tuple[float, float]]] = {
    "Car": (0.6, (4.0, 4.9), (1.7, 1.9), (1.4, 1.65)),
    "Van": (0.2, (4.8, 5.6), (1.9, 2.1), (1.9, 2.5)),
    "Truck": (0.12, (6.5, 10.0), (2.3, 2.5), (2.9, 3.6)),
    "Bus": (0.08, (10.5, 12.5), (2.5, 2.55), (3.0, 3.4)),
}
# Ray-casting parts per type: (x centre, z bottom, length, width, z top) as fractions of l, w, h.
_PARTS: dict[str, tuple[tuple[float, float, float, float, float], ...]] = {
    "Car": ((0.0, 0.0, 1.0, 1.0, 0.55), (-0.05, 0.55, 0.5, 0.92, 1.0)),
    "Van": ((0.0, 0.0, 1.0, 1.0, 0.45), (-0.08, 0.45, 0.84, 0.96, 1.0)),
    "Truck": ((0.39, 0.0, 0.22, 1.0, 0.8), (-0.12, 0.0, 0.76, 1.0, 1.0)),
    "Bus": ((0.0, 0.0, 1.0, 1.0, 1.0),),
}


@dataclass
class Vehicle:
    """A road user moving at constant velocity along its heading (speed 0: parked or queued)."""

    kind: str
    length: float
    width: float
    height: float
    x0: float
    y0: float
    heading: float
    speed: float
    reflectivity: float

    def box_at(self, t_s: float) -> np.ndarray:
        """(7,) box in the scene frame at ``t_s`` seconds after the scene start."""
        x = self.x0 + self.speed * t_s * np.cos(self.heading)
        y = self.y0 + self.speed * t_s * np.sin(self.heading)
        return np.array([x, y, self.height / 2, self.length, self.width, self.height, self.heading])


@dataclass
class Pole:
    """A roadside unit: its levelled "virtual LiDAR" frame on the pole, the pattern's tilt, the
    calibration error written for it (dx, dy metres) and its clock minus the ego's (us)."""

    T_scene_from_infrastructure: np.ndarray
    pitch_deg: float
    system_error_offset: tuple[float, float]
    phase_us: int


@dataclass
class ConnectedVehicle:
    """A road user that also senses: ``index`` into ``Scene.vehicles``, its clock minus the ego's (us)."""

    index: int
    phase_us: int


@dataclass
class Scene:
    """One sequence: static world, road users, ego, connected vehicles, poles and clocks."""

    index: int
    T_world_from_scene: np.ndarray
    static_boxes: np.ndarray  # (S, 7) scene frame
    static_reflectivity: np.ndarray  # (S,)
    vehicles: list[Vehicle]  # others; the ego is separate
    ego: Vehicle
    poles: list[Pole]  # the first is DAIR-V2X-C's infrastructure side
    start_us: int  # vehicle clock of frame 0
    name: str
    connected: list[ConnectedVehicle] = field(default_factory=list)  # besides the ego

    def vehicle_boxes(self, t_s: float) -> np.ndarray:
        """(V, 7) boxes of the other road users at ``t_s``."""
        return np.array([v.box_at(t_s) for v in self.vehicles]).reshape(-1, 7)

    def T_scene_from_ego_base(self, t_s: float) -> np.ndarray:
        """Pose of the ego's base (ground point under its centre, x forward) at ``t_s``."""
        return base_pose(self.ego, t_s)


def base_pose(vehicle: Vehicle, t_s: float) -> np.ndarray:
    """``T_scene_from_base`` of a vehicle (ground point under its centre, x forward) at ``t_s``."""
    x, y, _, _, _, _, yaw = vehicle.box_at(t_s)
    return make_transform(rotation_z(yaw), [x, y, 0.0])


def part_boxes(vehicles: list[Vehicle], boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ray-casting parts of vehicles at (V, 7) boxes -> parts (P, 7), owner (P,), reflectivity (P,)."""
    parts, owners, refl = [], [], []
    for i, (vehicle, (x, y, _, l, w, h, yaw)) in enumerate(zip(vehicles, boxes, strict=True)):
        c, s = np.cos(yaw), np.sin(yaw)
        for fx, z0, fl, fw, z1 in _PARTS[vehicle.kind]:
            parts.append(
                [x + fx * l * c, y + fx * l * s, (z0 + z1) * h / 2, fl * l, fw * w, (z1 - z0) * h, yaw]
            )
            owners.append(i)
            refl.append(vehicle.reflectivity)
    return np.array(parts).reshape(-1, 7), np.array(owners, dtype=np.int64), np.array(refl)


def _sample_vehicle(
    rng: np.random.Generator, kinds: tuple[str, ...] | None = None
) -> tuple[str, float, float, float]:
    names = kinds or tuple(VEHICLE_SIZES)
    weights = np.array([VEHICLE_SIZES[k][0] for k in names])
    kind = names[int(rng.choice(len(names), p=weights / weights.sum()))]
    _, length, width, height = VEHICLE_SIZES[kind]
    return kind, float(rng.uniform(*length)), float(rng.uniform(*width)), float(rng.uniform(*height))


def _line_of_vehicles(
    rng: np.random.Generator,
    count: int,
    start: float,
    direction: float,
    gap: tuple[float, float],
    kinds: tuple[str, ...] | None = None,
    limit: float = 95.0,
) -> list[tuple[float, tuple[str, float, float, float]]]:
    """Vehicles one after another from ``start`` along ``direction`` (+1 / -1): (centre, size)."""
    placed, edge = [], start
    for _ in range(count):
        size = _sample_vehicle(rng, kinds)
        centre = edge + direction * size[1] / 2
        if abs(centre) > limit:
            break
        placed.append((centre, size))
        edge = centre + direction * (size[1] / 2 + rng.uniform(*gap))
    return placed


def _buildings(rng: np.random.Generator) -> tuple[list[list[float]], list[float]]:
    """Two to four buildings per block corner, along both streets."""
    boxes, refl = [], []
    for sx in (-1, 1):
        for sy in (-1, 1):
            x = BUILDING_X + rng.uniform(0.0, 2.0)
            while x < 90.0:  # along the main road
                lx, ly = rng.uniform(12.0, 35.0), rng.uniform(12.0, 30.0)
                y = BUILDING_Y + rng.uniform(0.0, 2.0)
                h = rng.uniform(7.0, 30.0)
                boxes.append([sx * (x + lx / 2), sy * (y + ly / 2), h / 2, lx, ly, h, 0.0])
                refl.append(rng.uniform(0.2, 0.5))
                x += lx + rng.uniform(2.0, 10.0)
            y = BUILDING_Y + 34.0
            while y < 80.0:  # along the cross road, behind the corner building
                lx, ly = rng.uniform(10.0, 25.0), rng.uniform(12.0, 30.0)
                h = rng.uniform(7.0, 25.0)
                xb = BUILDING_X + rng.uniform(0.0, 2.0)
                boxes.append([sx * (xb + lx / 2), sy * (y + ly / 2), h / 2, lx, ly, h, 0.0])
                refl.append(rng.uniform(0.2, 0.5))
                y += ly + rng.uniform(2.0, 10.0)
    return boxes, refl


def _street_furniture(rng: np.random.Generator) -> tuple[list[list[float]], list[float]]:
    """Trees (trunk and canopy) and poles on the main road's sidewalks."""
    boxes, refl = [], []
    for sy in (-1, 1):
        x = -80.0 + rng.uniform(0.0, 15.0)
        while x < 80.0:
            if abs(x) > BUILDING_X + 2.0:
                y = sy * (MAIN_CURB_Y + 1.5)
                if rng.random() < 0.6:
                    boxes += [[x, y, 1.5, 0.4, 0.4, 3.0, 0.0], [x, y, 4.5, 3.0, 3.0, 3.0, rng.uniform(0, 1)]]
                    refl += [0.3, 0.2]
                else:
                    boxes.append([x, y, 3.5, 0.3, 0.3, 7.0, 0.0])
                    refl.append(0.5)
            x += rng.uniform(14.0, 28.0)
    return boxes, refl


def _road_users(rng: np.random.Generator, ego: Vehicle, road_users: tuple[int, int]) -> list[Vehicle]:
    """Parked vehicles, queues at the cross road's red light, main-road traffic (with a
    vehicle ahead of and beside the ego, often) and vehicles leaving on the cross road."""
    total = int(rng.integers(road_users[0], road_users[1] + 1))
    share = rng.dirichlet([2.5, 4.0, 2.5, 1.5]) * total
    n_parked, n_queued, n_moving, n_leaving = (round(float(v)) for v in share)
    vehicles: list[Vehicle] = []

    def add(
        kind_size: tuple[str, float, float, float], x: float, y: float, heading: float, speed: float
    ) -> None:
        kind, length, width, height = kind_size
        vehicles.append(
            Vehicle(kind, length, width, height, x, y, heading, speed, float(rng.uniform(0.15, 0.7)))
        )

    parking = [(sx, sy) for sx in (-1, 1) for sy in (-1, 1)]
    for k, (sx, sy) in enumerate(parking):  # main-road parking, then cross-road parking
        count = n_parked // 4 + (k < n_parked % 4)
        main = rng.random() < 0.3
        start = (MAIN_STOP_X + 6.0 if main else CROSS_STOP_Y + 4.0) + rng.uniform(0.0, 15.0)
        for centre, size in _line_of_vehicles(
            rng,
            count,
            sx * start if main else sy * start,
            sx if main else sy,
            (0.8, 8.0),
            ("Car", "Van", "Truck"),
            70.0,
        ):
            if main:
                add(size, centre, sy * MAIN_PARKING_Y, 0.0 if sy < 0 else np.pi, 0.0)
            else:
                add(size, sx * CROSS_PARKING_X, centre, np.pi / 2 if sx > 0 else -np.pi / 2, 0.0)
    for k, side in enumerate((-1, 1)):  # queues at the cross road's red light
        count = n_queued // 2 + (k < n_queued % 2)
        for centre, size in _line_of_vehicles(rng, count, side * CROSS_STOP_Y, side, (1.5, 3.5)):
            add(size, -side * LANE_M / 2, centre, -side * np.pi / 2, 0.0)
    lane_speed = {y: float(rng.uniform(6.0, 13.0)) for y in (-1.5 * LANE_M, LANE_M / 2, 1.5 * LANE_M)}
    lane_speed[EGO_LANE_Y] = ego.speed
    lane_speed[-1.5 * LANE_M] = ego.speed + float(rng.uniform(-1.5, 1.5))
    taken: dict[float, list[tuple[float, float]]] = {y: [] for y in lane_speed}  # (centre, length)
    taken[EGO_LANE_Y].append((ego.x0, ego.length))
    escorts = (  # vehicles right ahead of the ego and beside it block much of its view
        (EGO_LANE_Y, LEAD_VEHICLE_PROBABILITY, None),
        (-1.5 * LANE_M, SIDE_VEHICLE_PROBABILITY, ("Van", "Truck", "Bus")),
    )
    for y, probability, kinds in escorts:
        if rng.random() < probability:
            size = _sample_vehicle(rng, kinds)
            centre = ego.x0 + (ego.length + size[1]) / 2 + float(rng.uniform(3.0, 15.0))
            add(size, centre, y, 0.0, lane_speed[y])
            taken[y].append((centre, size[1]))
    lanes = list(lane_speed)
    counts = np.bincount(rng.integers(0, len(lanes), n_moving), minlength=len(lanes))
    for y, count in zip(lanes, counts, strict=True):
        heading = 0.0 if y < 0 else np.pi
        direction = -1.0 if y < 0 else 1.0  # fill from the front of the traffic backwards
        start = 60.0 * -direction + rng.uniform(-10.0, 10.0)
        for centre, size in _line_of_vehicles(rng, int(count), start, direction, (6.0, 25.0), limit=60.0):
            if any(abs(centre - x) < (size[1] + l) / 2 + 6.0 for x, l in taken[y]):
                continue
            add(size, centre, y, heading, lane_speed[y])
    for k, side in enumerate((-1, 1)):  # leaving the intersection on the cross road
        count = n_leaving // 2 + (k < n_leaving % 2)
        speed = float(rng.uniform(5.0, 10.0))
        start = side * (CROSS_STOP_Y + rng.uniform(4.0, 20.0))
        for centre, size in _line_of_vehicles(rng, count, start, side, (8.0, 20.0), ("Car", "Van")):
            add(size, side * LANE_M / 2, centre, side * np.pi / 2, speed)
    return vehicles


def make_scene(
    rng: np.random.Generator, index: int, frames: int, *, road_users: tuple[int, int], start_us: int
) -> Scene:
    """A random intersection scene for ``frames`` sweeps at 10 Hz, the first at ``start_us``."""
    static, static_refl = _buildings(rng)
    furniture, furniture_refl = _street_furniture(rng)
    ego_speed = float(rng.uniform(5.0, 10.0))
    drive_m = ego_speed * frames * 0.1
    # The middle of the drive lies 30-70 m before the intersection; drives longer than
    # 80 m start 70-110 m before it and go through it.
    middle = float(rng.uniform(-70.0, -30.0)) + max(0.5 * drive_m - 40.0, 0.0)
    ego_x0 = middle - 0.5 * drive_m
    ego = Vehicle("Car", 4.6, 1.85, 1.5, ego_x0, EGO_LANE_Y, 0.0, ego_speed, 0.5)

    vehicles = _road_users(rng, ego, road_users)
    corner = int(rng.choice(len(POLE_CORNERS), p=POLE_CORNER_WEIGHTS))
    T_scene_from_pole = _pole_pose(rng, corner)
    scene_yaw = float(rng.uniform(-np.pi, np.pi))
    origin = [rng.uniform(1000.0, 9000.0), rng.uniform(-9000.0, -1000.0), rng.uniform(15.0, 45.0)]
    offset, phase_us = _pole_errors(rng)
    pole = Pole(T_scene_from_pole, float(rng.uniform(15.0, 21.0)), offset, phase_us)
    return Scene(
        index=index,
        T_world_from_scene=make_transform(rotation_z(scene_yaw), origin),
        static_boxes=np.array(static + furniture),
        static_reflectivity=np.array(static_refl + furniture_refl),
        vehicles=vehicles,
        ego=ego,
        poles=[pole],
        start_us=start_us,
        name=f"synthetic_intersection_{index:03d}",
    )


def _pole_pose(rng: np.random.Generator, corner: int) -> np.ndarray:
    """``T_scene_from_infrastructure`` of a pole 5-7 m high on ``POLE_CORNERS[corner]``, looking
    into the intersection (+-10 deg)."""
    sx, sy = POLE_CORNERS[corner]
    pole = np.array([sx * (CROSS_CURB_X + 2.0), sy * (MAIN_CURB_Y + 2.0)])
    yaw = float(np.arctan2(-pole[1], -pole[0]) + np.radians(rng.uniform(-10.0, 10.0)))
    height = float(rng.uniform(5.0, 7.0))
    return make_transform(rotation_z(yaw), [pole[0], pole[1], height])


def _clock_phase_us(rng: np.random.Generator) -> int:
    """A sensor's clock minus the ego's: 15-50 ms either way, in microseconds."""
    return int(float(rng.uniform(15.0, 50.0)) * float(rng.choice([-1.0, 1.0])) * 1000)


def _pole_errors(rng: np.random.Generator) -> tuple[tuple[float, float], int]:
    """A pole's calibration error (dx, dy) of 0.1-0.8 m each and its clock phase (us)."""
    offset = rng.uniform(0.1, 0.8, size=2) * rng.choice([-1.0, 1.0], size=2)
    return (round(float(offset[0]), 3), round(float(offset[1]), 3)), _clock_phase_us(rng)


def add_agents(scene: Scene, rng: np.random.Generator, *, vehicles: int, rsus: int) -> None:
    """Give ``scene`` ``vehicles`` - 1 connected vehicles and ``rsus`` - 1 more poles (in place).

    Connected vehicles are drawn among the moving road users within ``CONNECTED_RANGE_M`` of
    the ego at the scene start, then the nearest others complete them; the poles take the
    corners the first pole left free, in random order. Each gets a clock 15-50 ms off the ego's.
    """
    if vehicles - 1 > len(scene.vehicles):
        raise ValueError(f"scene {scene.index} has {len(scene.vehicles)} road users, {vehicles - 1} wanted")
    ego_xy = scene.ego.box_at(0.0)[:2]
    distance = np.array([np.hypot(*(v.box_at(0.0)[:2] - ego_xy)) for v in scene.vehicles])
    moving = np.array([v.speed > 0.0 for v in scene.vehicles], dtype=bool)
    near = moving & (distance <= CONNECTED_RANGE_M)
    rest = [int(i) for i in np.argsort(distance, kind="stable") if not near[i]]
    chosen = [*rng.permutation(np.flatnonzero(near)).tolist(), *rest][: vehicles - 1]
    for index in chosen:
        scene.connected.append(ConnectedVehicle(int(index), _clock_phase_us(rng)))
    first = POLE_CORNERS.index(_corner_of(scene.poles[0]))
    free = [c for c in rng.permutation(len(POLE_CORNERS)).tolist() if c != first]
    for corner in free[: rsus - 1]:
        T_scene_from_pole = _pole_pose(rng, corner)
        offset, phase_us = _pole_errors(rng)
        scene.poles.append(Pole(T_scene_from_pole, float(rng.uniform(15.0, 21.0)), offset, phase_us))


def _corner_of(pole: Pole) -> tuple[float, float]:
    x, y = pole.T_scene_from_infrastructure[:2, 3]
    return float(np.sign(x)), float(np.sign(y))
