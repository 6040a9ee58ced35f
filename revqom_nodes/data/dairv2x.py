"""DAIR-V2X-C reader: vehicle-infrastructure frames with poses, points and labels.

The layout and transforms follow the official devkit (summarised in README.md, "Data"):

- vehicle pose: ``T_world_from_lidar = T_world_from_novatel @ T_novatel_from_lidar``;
- infrastructure pose: ``virtuallidar_to_world`` with the pair's ``system_error_offset``
  added to its translation;
- cooperative labels: ``world_8_points`` -> (M, 7) boxes in the world frame.

Tolerated real-data variations: ``system_error_offset`` given as ``""``, numbers given
as strings, type names in any case, missing images (never read), ``label_lidar_std_path``
or ``label_lidar_path``, ``relative_error`` values ``""``. Only vehicle classes (Car, Van,
Truck, Bus, any case) are kept, in the cooperative and in the single-side labels.

Many agents (README.md, "Many agents"): further agents have side folders of their own
(``side_folder``: ``vehicle-side-1``, ``infrastructure-side-1``, ...), listed per cooperative
record under ``other_agents``; a frame's agents are the ego, the other vehicles, the roadside units.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from revqom_nodes.data.errors import DatasetError
from revqom_nodes.data.pcd import read_pcd
from revqom_nodes.geometry import box_corners, boxes_from_corners, invert, make_transform

log = logging.getLogger(__name__)

VEHICLE_TYPES: frozenset[str] = frozenset({"car", "van", "truck", "bus"})
SPLITS: tuple[str, ...] = ("train", "val", "all")
VEHICLE, INFRASTRUCTURE = "vehicle", "infrastructure"
VEHICLE_SIDE, INFRASTRUCTURE_SIDE = "vehicle-side", "infrastructure-side"
LABEL_PATH_KEYS: tuple[str, ...] = ("label_lidar_std_path", "label_lidar_path")
OTHER_AGENTS_KEY = "other_agents"  # the many-agent extension's key in cooperative/data_info.json
LABEL_AGENT_KEY = "agent_id"  # the extension's key of a label_world entry that is a connected vehicle's body
SIDES: dict[str, str] = {VEHICLE: VEHICLE_SIDE, INFRASTRUCTURE: INFRASTRUCTURE_SIDE}


def side_folder(role: str, number: int) -> str:
    """Folder of a role's ``number``-th agent: (vehicle, 0) -> ``vehicle-side``, (vehicle, 2) ->
    ``vehicle-side-2`` (the many-agent extension; number 0 is DAIR-V2X-C's own side)."""
    return SIDES[role] if number == 0 else f"{SIDES[role]}-{number}"


def agent_id_of(role: str, number: int) -> str:
    """Agent id of a role's ``number``-th agent: ``vehicle``, ``vehicle_1``, ``infrastructure_2`` ..."""
    return role if number == 0 else f"{role}_{number}"


def _side_of_path(path: str, where: str) -> tuple[str, int]:
    """``"vehicle-side-2/velodyne/000010.pcd"`` -> (vehicle, 2); a folder outside the layout is an error."""
    folder = Path(path).parts[0] if Path(path).parts else ""
    for role, side in SIDES.items():
        if folder == side:
            return role, 0
        number = folder.removeprefix(f"{side}-")
        if number != folder and number.isdigit() and int(number) > 0:
            return role, int(number)
    raise DatasetError(
        f"{where}: {path!r} is in no agent folder ({VEHICLE_SIDE}[-K] or {INFRASTRUCTURE_SIDE}[-K])"
    )


def is_vehicle_type(name: object) -> bool:
    """Whether a label type merges into the ``vehicle`` class (Car, Van, Truck, Bus, any case)."""
    return str(name).strip().lower() in VEHICLE_TYPES


@dataclass
class AgentSample:
    """One agent's sweep: points (N, 4) float32 in its LiDAR frame, pose (4, 4) float64.

    ``boxes`` (M, 7) float64 and ``labels`` are the agent's single-side vehicle labels in
    its own LiDAR frame.
    """

    agent_id: str
    role: str
    frame_id: str
    points: np.ndarray
    T_world_from_lidar: np.ndarray
    timestamp_us: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 7)))
    labels: list[str] = field(default_factory=list)


@dataclass
class CooperativeFrame:
    """A vehicle-infrastructure pair; ``agents[0]`` is the ego vehicle.

    ``boxes_world`` (M, 7) float64 is the cooperative ground truth (vehicle classes) of the ego,
    ``labels`` its original type strings, ``system_error_offset`` (dx, dy) in metres.
    ``bodies`` maps a connected vehicle's agent id to its labelled body (box (7,), type): the
    ego's is not in ``boxes_world``, every other one is (README.md, "Many agents").
    """

    frame_id: str
    agents: list[AgentSample]
    boxes_world: np.ndarray
    labels: list[str]
    system_error_offset: tuple[float, float]
    bodies: dict[str, tuple[np.ndarray, str]] = field(default_factory=dict)

    @property
    def ego(self) -> AgentSample:
        return self.agents[0]

    def agent(self, agent_id: str) -> AgentSample:
        for sample in self.agents:
            if sample.agent_id == agent_id:
                return sample
        raise KeyError(
            f"frame {self.frame_id} has no agent {agent_id!r} (has {[a.agent_id for a in self.agents]})"
        )

    def as_ego(self, agent_id: str) -> CooperativeFrame:
        """The same frame seen from the vehicle ``agent_id``: it first, the others in their order
        (the order its fusion node fuses them in); the ground truth has the former ego's body and
        not its own (README.md, "Many agents")."""
        ego = self.agent(agent_id)
        if ego.role != VEHICLE:
            raise KeyError(f"agent {agent_id!r} of frame {self.frame_id} is not a vehicle: no ego")
        others = [a for a in self.agents if a.agent_id != agent_id]
        boxes, labels = _with_body(self.boxes_world, self.labels, self.bodies.get(self.ego.agent_id))
        boxes, labels = _without_body(boxes, labels, self.bodies.get(agent_id))
        return CooperativeFrame(self.frame_id, [ego, *others], boxes, labels, self.system_error_offset,
                                self.bodies)

    def boxes_in(self, T_world_from_lidar: np.ndarray) -> np.ndarray:
        """Cooperative boxes in the frame of a LiDAR with pose ``T_world_from_lidar`` -> (M, 7)."""
        T = invert(np.asarray(T_world_from_lidar, dtype=np.float64))
        corners = box_corners(self.boxes_world) @ T[:3, :3].T + T[:3, 3]
        return boxes_from_corners(corners)


def _with_body(boxes: np.ndarray, labels: list[str], body: tuple[np.ndarray, str] | None
               ) -> tuple[np.ndarray, list[str]]:
    return (boxes, labels) if body is None else (np.vstack([boxes, body[0]]), [*labels, body[1]])


def _without_body(boxes: np.ndarray, labels: list[str], body: tuple[np.ndarray, str] | None
                  ) -> tuple[np.ndarray, list[str]]:
    if body is None:
        return boxes, labels
    keep = ~(boxes == body[0]).all(axis=1)
    return boxes[keep], [label for label, k in zip(labels, keep, strict=True) if k]


def load_json(path: Path, what: str) -> Any:
    """Parse a JSON file; a missing or malformed file raises :class:`DatasetError` naming it."""
    try:
        with open(path, encoding="utf-8") as stream:
            return json.load(stream)
    except FileNotFoundError as exc:
        raise DatasetError(f"{path}: missing {what}") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: malformed {what} ({exc})") from exc


def _number(value: object, where: str, default: float | None = None) -> float:
    """A JSON number or numeric string -> float; ``""`` / None gives ``default`` when set."""
    if (value is None or (isinstance(value, str) and not value.strip())) and default is not None:
        return default
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{where}: expected a number, got {value!r}") from exc


def frame_id_of(path: str) -> str:
    """The frame id a DAIR path names: ``"vehicle-side/velodyne/015438.pcd"`` -> ``"015438"``."""
    return Path(str(path)).stem


def parse_offset(value: object, where: str) -> tuple[float, float]:
    """``{"delta_x", "delta_y"}`` (numbers, strings or "") or "" -> (dx, dy) metres."""
    if value is None or value == "":
        return 0.0, 0.0
    if not isinstance(value, dict):
        raise DatasetError(f'{where}: system_error_offset must be an object or "", got {value!r}')
    return (_number(value.get("delta_x"), where, 0.0), _number(value.get("delta_y"), where, 0.0))


def parse_calibration(data: object, path: Path) -> np.ndarray:
    """Calibration JSON (flat, or nested under ``"transform"``) -> (4, 4) ``T_dst_from_src``."""
    if isinstance(data, dict) and isinstance(data.get("transform"), dict):
        data = data["transform"]
    try:
        rotation = np.asarray(data["rotation"], dtype=np.float64).reshape(3, 3)  # type: ignore[index]
        translation = np.asarray(data["translation"], dtype=np.float64).reshape(3)  # type: ignore[index]
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(f"{path}: calibration needs rotation (3x3) and translation (3x1): {exc}") from exc
    return make_transform(rotation, translation)


def parse_side_labels(data: object, path: Path) -> tuple[np.ndarray, list[str]]:
    """Single-side label list -> vehicle boxes (M, 7) in the sensor frame and their type strings."""
    if not isinstance(data, list):
        raise DatasetError(f"{path}: a label file must hold a JSON list")
    boxes, types = [], []
    for i, item in enumerate(data):
        where = f"{path} (label {i})"
        try:
            if not is_vehicle_type(item["type"]):
                continue
            dims, loc = item["3d_dimensions"], item["3d_location"]
            box = [_number(loc[k], where) for k in "xyz"] + [_number(dims[k], where) for k in "lwh"]
            box.append(_number(item["rotation"], where))
        except (KeyError, TypeError) as exc:
            raise DatasetError(f"{where}: missing or malformed field {exc}") from exc
        if min(box[3:6]) <= 0.0:
            continue
        boxes.append(box)
        types.append(str(item["type"]))
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 7), types


def parse_world_labels(data: object, path: Path) -> tuple[np.ndarray, list[str], list[str | None]]:
    """Cooperative ``label_world`` list -> vehicle boxes (M, 7) in the world frame, types, and the
    connected vehicle each is the body of (``LABEL_AGENT_KEY``; None for other road users)."""
    if not isinstance(data, list):
        raise DatasetError(f"{path}: a label file must hold a JSON list")
    corners, types, bodies = [], [], []
    for i, item in enumerate(data):
        try:
            if not is_vehicle_type(item["type"]):
                continue
            points = np.asarray(item["world_8_points"], dtype=np.float64).reshape(8, 3)
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetError(f"{path} (label {i}): missing or malformed world_8_points: {exc}") from exc
        corners.append(points)
        types.append(str(item["type"]))
        bodies.append(None if item.get(LABEL_AGENT_KEY) is None else str(item[LABEL_AGENT_KEY]))
    boxes = boxes_from_corners(np.asarray(corners).reshape(-1, 8, 3))
    keep = (boxes[:, 3:6] > 1e-6).all(axis=1)
    return (boxes[keep], [t for t, k in zip(types, keep, strict=True) if k],
            [b for b, k in zip(bodies, keep, strict=True) if k])


def _timestamp_us(record: dict, where: str) -> int:
    value = record.get("pointcloud_timestamp")
    try:
        return int(str(value).strip())
    except ValueError:
        return int(_number(value, f"{where}: pointcloud_timestamp"))


def _index_side(path: Path) -> dict[str, dict]:
    """Side ``data_info.json`` -> {frame id: record}, ids taken from the point-cloud path."""
    records = load_json(path, "side data_info")
    if not isinstance(records, list):
        raise DatasetError(f"{path}: data_info must hold a JSON list")
    index = {}
    for record in records:
        key = (
            (record.get("pointcloud_path") or record.get("image_path")) if isinstance(record, dict) else None
        )
        if not key:
            raise DatasetError(f"{path}: record without pointcloud_path: {record!r}")
        index[frame_id_of(key)] = record
    return index


class _AgentRef(NamedTuple):
    """Where one agent's sweep of a cooperative frame is: its role's ``number``-th side folder."""

    role: str
    number: int
    frame_id: str
    points: str  # relative to the root
    offset: tuple[float, float]  # system_error_offset added to an infrastructure pose; (0, 0) for vehicles


class _Pair(NamedTuple):
    vehicle_id: str
    infrastructure_id: str
    label: str
    offset: tuple[float, float]
    agents: tuple[_AgentRef, ...]  # the ego, the other vehicles, the roadside units


def _other_agents(item: dict, where: str) -> list[_AgentRef]:
    """The many-agent extension's ``other_agents`` entries of a cooperative record (none in DAIR-V2X-C)."""
    entries = item.get(OTHER_AGENTS_KEY, [])
    if not isinstance(entries, list):
        raise DatasetError(f"{where}: {OTHER_AGENTS_KEY} must be a JSON list")
    agents = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("pointcloud_path"), str):
            raise DatasetError(f"{where}: {OTHER_AGENTS_KEY} entry without pointcloud_path: {entry!r}")
        role, number = _side_of_path(entry["pointcloud_path"], where)
        if number == 0:
            raise DatasetError(f"{where}: {OTHER_AGENTS_KEY} names DAIR-V2X-C's own {SIDES[role]}")
        offset = (
            parse_offset(entry.get("system_error_offset"), where) if role == INFRASTRUCTURE else (0.0, 0.0)
        )
        agents.append(
            _AgentRef(role, number, frame_id_of(entry["pointcloud_path"]), entry["pointcloud_path"], offset)
        )
    return agents


def _read_split(path: Path) -> set[str]:
    ids = load_json(path, "split file")
    if not isinstance(ids, list):
        raise DatasetError(f"{path}: a split file must hold a JSON list of vehicle frame ids")
    return {str(i).zfill(6) if isinstance(i, int) else frame_id_of(str(i)) for i in ids}


class DairV2XReader:
    """Frames of a DAIR-V2X-C root for one split (``train``, ``val`` or ``all``).

    Only the JSON indexes are read at construction; ``reader[i]`` reads that frame's
    point clouds, calibration and labels. Roots of the many-agent extension (README.md,
    "Many agents") give every agent of a frame: the ego, the other vehicles, the roadside units.
    """

    def __init__(self, root: str | Path, split: str = "train") -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.root = Path(root)
        self.split = split
        info_path = self.root / "cooperative" / "data_info.json"
        pairs = load_json(info_path, "cooperative data_info")
        if not isinstance(pairs, list):
            raise DatasetError(f"{info_path}: data_info must hold a JSON list")
        self._side_info = {side: _index_side(self.root / side / "data_info.json") for side in SIDES.values()}
        wanted = None if split == "all" else _read_split(self.root / f"{split}.json")
        self._pairs: list[_Pair] = []
        self._sweeps: dict[str, list[tuple[int, int, _AgentRef]]] = {}  # agent id -> (stamp us, frame, ref)
        for i, item in enumerate(pairs):
            where = f"{info_path} (pair {i})"
            try:
                vehicle_points = item["vehicle_pointcloud_path"]
                infrastructure_points = item["infrastructure_pointcloud_path"]
            except (KeyError, TypeError) as exc:
                raise DatasetError(f"{where}: missing point-cloud path {exc}") from exc
            vehicle_id = frame_id_of(vehicle_points)
            if wanted is not None and vehicle_id not in wanted:
                continue
            label = item.get("cooperative_label_path") or f"cooperative/label_world/{vehicle_id}.json"
            offset = parse_offset(item.get("system_error_offset"), where)
            others = _other_agents(item, where)
            agents = (
                _AgentRef(VEHICLE, 0, vehicle_id, vehicle_points, (0.0, 0.0)),
                *(a for a in others if a.role == VEHICLE),
                _AgentRef(
                    INFRASTRUCTURE, 0, frame_id_of(infrastructure_points), infrastructure_points, offset
                ),
                *(a for a in others if a.role == INFRASTRUCTURE),
            )
            for agent in others:
                side = side_folder(agent.role, agent.number)
                if side not in self._side_info:
                    self._side_info[side] = _index_side(self.root / side / "data_info.json")
            self._pairs.append(_Pair(vehicle_id, frame_id_of(infrastructure_points), label, offset, agents))
        if wanted is not None and len(wanted) > len(self._pairs):
            log.warning(
                "%d ids of %s.json have no pair in %s", len(wanted) - len(self._pairs), split, info_path
            )

    def __len__(self) -> int:
        return len(self._pairs)

    def __iter__(self) -> Iterator[CooperativeFrame]:
        for i in range(len(self)):
            yield self[i]

    @property
    def frame_ids(self) -> list[str]:
        """Vehicle frame ids of this split, in ``cooperative/data_info.json`` order."""
        return [pair.vehicle_id for pair in self._pairs]

    @property
    def agents(self) -> list[tuple[str, str]]:
        """(agent id, role) of every agent of this split's frames: the ego, the other vehicles,
        the roadside units (``[("vehicle", "vehicle"), ("infrastructure", "infrastructure")]``
        for DAIR-V2X-C)."""
        refs = {(a.role != VEHICLE, a.number, a.role) for pair in self._pairs for a in pair.agents}
        return [(agent_id_of(role, number), role) for _, number, role in sorted(refs)]

    def pairing(self, index: int) -> tuple[str, str, tuple[float, float]]:
        """(vehicle id, infrastructure id, system_error_offset) of frame ``index``, no file read."""
        pair = self._pairs[index]
        return pair.vehicle_id, pair.infrastructure_id, pair.offset

    def agent_ids(self, index: int) -> list[str]:
        """The agent id of every agent of frame ``index``, in the order of ``CooperativeFrame.agents``
        (the ego first), no file read."""
        return [agent_id_of(agent.role, agent.number) for agent in self._pairs[index].agents]

    def timestamps_us(self, index: int) -> tuple[int, ...]:
        """``pointcloud_timestamp`` of every agent of frame ``index`` in microseconds, in the
        order of ``CooperativeFrame.agents`` ((vehicle, infrastructure) for DAIR-V2X-C), from the
        side indexes (no file read)."""
        stamps = []
        for agent in self._pairs[index].agents:
            side = side_folder(agent.role, agent.number)
            record = self._side_record(side, agent.frame_id)
            stamps.append(_timestamp_us(record, f"{side}/data_info.json ({agent.frame_id})"))
        return tuple(stamps)

    def ego_frame(self, index: int, ego: str) -> CooperativeFrame:
        """Frame ``index`` seen from the vehicle ``ego`` as its fusion node pairs the sweeps: its
        own sweep first, then each other agent's sweep nearest in time to it among the split's
        frames (the agents' clocks differ, so for another ego than the first vehicle that may be
        a sweep of the previous or next frame); the ground truth of frame ``index`` without
        ``ego``'s body (``CooperativeFrame.as_ego``). For the first vehicle: the frame itself."""
        frame = self[index].as_ego(ego)
        if ego == self.agents[0][0]:
            return frame
        if not self._sweeps:
            for j, pair in enumerate(self._pairs):
                for ref, stamp in zip(pair.agents, self.timestamps_us(j), strict=True):
                    self._sweeps.setdefault(agent_id_of(ref.role, ref.number), []).append((stamp, j, ref))
        agents = [frame.ego]
        for sample in frame.agents[1:]:
            _, j, ref = min(self._sweeps[sample.agent_id], key=lambda s: abs(s[0] - frame.ego.timestamp_us))
            agents.append(sample if j == index else self._sample(ref))
        return replace(frame, agents=agents)

    def _sample(self, ref: _AgentRef) -> AgentSample:
        return self._vehicle(ref) if ref.role == VEHICLE else self._infrastructure(ref)

    def __getitem__(self, index: int) -> CooperativeFrame:
        pair = self._pairs[index]
        try:
            agents = [self._sample(agent) for agent in pair.agents]
            label_path = self.root / pair.label
            data = load_json(label_path, "cooperative label")
            boxes, labels, owners = parse_world_labels(data, label_path)
        except DatasetError as exc:
            raise DatasetError(f"frame {pair.vehicle_id}: {exc}") from exc
        bodies = {o: (boxes[i], labels[i]) for i, o in enumerate(owners) if o is not None}
        boxes, labels = _without_body(boxes, labels, bodies.get(agents[0].agent_id))
        return CooperativeFrame(pair.vehicle_id, agents, boxes, labels, pair.offset, bodies)

    def _side_record(self, side: str, frame_id: str) -> dict:
        index = self._side_info[side]
        if frame_id not in index:
            raise DatasetError(f"{self.root / side / 'data_info.json'}: no record for frame {frame_id}")
        return index[frame_id]

    def _side_file(self, side: str, record: dict, keys: tuple[str, ...], default: str, what: str) -> Any:
        relative = next((record[k] for k in keys if record.get(k)), default)
        return load_json(self.root / side / relative, what), self.root / side / relative

    def _labels(self, side: str, record: dict, default: str) -> tuple[np.ndarray, list[str]]:
        data, path = self._side_file(side, record, LABEL_PATH_KEYS, default, "single-side label")
        return parse_side_labels(data, path)

    def _vehicle(self, agent: _AgentRef) -> AgentSample:
        fid, side = agent.frame_id, side_folder(VEHICLE, agent.number)
        record = self._side_record(side, fid)
        data, path = self._side_file(
            side,
            record,
            ("calib_lidar_to_novatel_path",),
            f"calib/lidar_to_novatel/{fid}.json",
            "calibration",
        )
        T_novatel_from_lidar = parse_calibration(data, path)
        data, path = self._side_file(
            side,
            record,
            ("calib_novatel_to_world_path",),
            f"calib/novatel_to_world/{fid}.json",
            "calibration",
        )
        T_world_from_lidar = parse_calibration(data, path) @ T_novatel_from_lidar
        boxes, labels = self._labels(side, record, f"label/lidar/{fid}.json")
        points = read_pcd(self.root / agent.points)
        stamp = _timestamp_us(record, f"{side}/data_info.json ({fid})")
        agent_id = agent_id_of(VEHICLE, agent.number)
        return AgentSample(agent_id, VEHICLE, fid, points, T_world_from_lidar, stamp, boxes, labels)

    def _infrastructure(self, agent: _AgentRef) -> AgentSample:
        fid, side = agent.frame_id, side_folder(INFRASTRUCTURE, agent.number)
        record = self._side_record(side, fid)
        data, path = self._side_file(
            side,
            record,
            ("calib_virtuallidar_to_world_path",),
            f"calib/virtuallidar_to_world/{fid}.json",
            "calibration",
        )
        T_world_from_lidar = parse_calibration(data, path)
        T_world_from_lidar[:2, 3] += agent.offset
        boxes, labels = self._labels(side, record, f"label/virtuallidar/{fid}.json")
        points = read_pcd(self.root / agent.points)
        stamp = _timestamp_us(record, f"{side}/data_info.json ({fid})")
        agent_id = agent_id_of(INFRASTRUCTURE, agent.number)
        return AgentSample(agent_id, INFRASTRUCTURE, fid, points, T_world_from_lidar, stamp, boxes, labels)
