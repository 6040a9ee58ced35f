"""Synthetic DAIR-V2X-C look-alike datasets: ``generate_dataset`` and its file layout.

Each scene (sequence) is rendered at 10 Hz (``synth_render``): the ego's 360-degree LiDAR
at the vehicle stamps and the pole LiDAR at its own clock, a few tens of ms off; with
``SynthConfig.partner_delay_ms`` the pole's sweep of each pair is instead that many ms older
than the ego's (one value drawn per frame from the range), the traffic having moved meanwhile,
and the cooperative labels stay at the ego's stamp. Every
file and field of the DAIR-V2X-C layout is written (README.md, "Data"); images are not (no
camera model): their paths are listed, as in the real data_info files, but the files are
absent. The infrastructure calibration is written off by ``system_error_offset``, which
the pair's ``data_info`` entry corrects. The dataset appears under ``out_dir`` only once
complete.

With ``SynthConfig.vehicles`` / ``rsus`` above 1, the connected vehicles and further poles
(``synth_scene.add_agents``) get one side folder each (``vehicle-side-1``,
``infrastructure-side-1``, ...) and an ``other_agents`` list in each cooperative record: the
many-agent extension of the layout (README.md, "Many agents"). Their sweeps draw from random
streams of their own, so the DAIR-V2X-C part is the same bytes as the 1 + 1 dataset of the seed.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from revqom_nodes.data.dairv2x import (
    INFRASTRUCTURE,
    LABEL_AGENT_KEY,
    OTHER_AGENTS_KEY,
    VEHICLE,
    agent_id_of,
    side_folder,
)
from revqom_nodes.data.errors import DatasetError
from revqom_nodes.data.lidar import infrastructure_lidar, vehicle_lidar
from revqom_nodes.data.pcd import write_pcd
from revqom_nodes.data.synth_render import (
    SWEEP_PERIOD_US,
    T_NOVATEL_FROM_LIDAR,
    RenderedFrame,
    RenderedSweep,
    SideLabels,
    render_frame,
)
from revqom_nodes.data.synth_scene import POLE_CORNERS, Scene, add_agents, make_scene
from revqom_nodes.geometry import box_corners

log = logging.getLogger(__name__)

FIRST_STAMP_US = 1_626_155_000_000_000  # July 2021, like the real recordings


@dataclass(frozen=True)
class SynthConfig:
    """Generator settings; the defaults are the project's synthetic DAIR-V2X-C."""

    vehicle_beams: int = 40
    vehicle_azimuth_step_deg: float = 0.3
    infrastructure_rings: int = 150
    infrastructure_azimuth_step_deg: float = 0.25
    road_users: tuple[int, int] = (20, 40)
    frames_per_scene: int = 20
    val_fraction: float = 0.2
    label_min_points: int = 3
    label_range_m: float = 100.0
    partner_delay_ms: tuple[float, float] | None = None  # (low, high); None: each partner's own clock
    vehicles: int = 1  # the ego and vehicles - 1 connected vehicles
    rsus: int = 1  # roadside units, at most one per corner


@dataclass
class GenerationSummary:
    """What ``generate_dataset`` wrote."""

    root: Path
    frames: int
    scenes: int
    train_ids: list[str] = field(default_factory=list)
    val_ids: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _calibration(T: np.ndarray, **extra: object) -> dict:
    return {"rotation": T[:3, :3].tolist(), "translation": T[:3, 3:4].tolist(), **extra}


def _side_label_json(labels: SideLabels) -> list[dict]:
    return [
        {
            "type": kind,
            "truncated_state": 0,
            "occluded_state": 0 if n >= 30 else (1 if n >= 10 else 2),
            "2d_box": {"xmin": 0.0, "ymin": 0.0, "xmax": 0.0, "ymax": 0.0},
            "3d_dimensions": {"h": h, "w": w, "l": l},
            "3d_location": {"x": x, "y": y, "z": z},
            "rotation": yaw,
        }
        for (x, y, z, l, w, h, yaw), kind, n in zip(
            labels.boxes.tolist(), labels.kinds, labels.points.tolist(), strict=True
        )
    ]


def _write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data), encoding="utf-8")


def _write_sweep(side_dir: Path, sweep: RenderedSweep, fid: str) -> dict:
    """Write a sweep's point cloud -> the image and point-cloud fields of its data_info record."""
    write_pcd(side_dir / "velodyne" / f"{fid}.pcd", sweep.points)
    return {
        "image_path": f"image/{fid}.jpg",
        "image_timestamp": str(sweep.stamp_us + 1_500),
        "pointcloud_path": f"velodyne/{fid}.pcd",
        "pointcloud_timestamp": str(sweep.stamp_us),
    }


def _write_vehicle(
    root: Path, side: str, sweep: RenderedSweep, fid: str, scene: Scene, batch: tuple[str, str]
) -> dict:
    """Write one vehicle sweep's files under ``side`` -> its side data_info record."""
    _write_json(
        root / side / "calib" / "lidar_to_novatel" / f"{fid}.json",
        {"transform": _calibration(T_NOVATEL_FROM_LIDAR)},
    )
    _write_json(
        root / side / "calib" / "novatel_to_world" / f"{fid}.json",
        _calibration(sweep.T_world_from_calibrated),
    )
    _write_json(root / side / "label" / "lidar" / f"{fid}.json", _side_label_json(sweep.labels))
    return {
        **_write_sweep(root / side, sweep, fid),
        "calib_lidar_to_novatel_path": f"calib/lidar_to_novatel/{fid}.json",
        "calib_novatel_to_world_path": f"calib/novatel_to_world/{fid}.json",
        "label_lidar_std_path": f"label/lidar/{fid}.json",
        "batch_id": str(scene.index),
        "batch_start_id": batch[0],
        "batch_end_id": batch[1],
        "intersection_loc": scene.name,
    }


def _write_infrastructure(
    root: Path, side: str, sweep: RenderedSweep, fid: str, scene: Scene, offset: tuple[float, float]
) -> dict:
    """Write one pole sweep's files under ``side``, the calibration off by ``offset`` (dx, dy)
    metres, which the cooperative index corrects -> its side data_info record."""
    T_calibrated = sweep.T_world_from_calibrated.copy()
    T_calibrated[:2, 3] -= offset
    _write_json(
        root / side / "calib" / "virtuallidar_to_world" / f"{fid}.json",
        _calibration(T_calibrated, relative_error={"delta_x": offset[0], "delta_y": offset[1]}),
    )
    _write_json(root / side / "label" / "virtuallidar" / f"{fid}.json", _side_label_json(sweep.labels))
    return {
        **_write_sweep(root / side, sweep, fid),
        "calib_virtuallidar_to_world_path": f"calib/virtuallidar_to_world/{fid}.json",
        "label_lidar_std_path": f"label/virtuallidar/{fid}.json",
        "batch_id": str(scene.index),
        "intersection_loc": scene.name,
    }


def _write_frame(
    root: Path, frame: RenderedFrame, scene: Scene, vehicle_id: str, infra_id: str, batch: tuple[str, str]
) -> tuple[dict, list[dict], list[dict]]:
    """Write one cooperative frame's files -> its cooperative record and the side records of its
    vehicles and roadside units (in the order of ``side_folders``). Every agent of a role uses the
    frame id of the role's first side."""
    vehicles = [
        _write_vehicle(root, side_folder(VEHICLE, n), sweep, vehicle_id, scene, batch)
        for n, sweep in enumerate(frame.vehicles)
    ]
    infrastructures = [
        _write_infrastructure(
            root, side_folder(INFRASTRUCTURE, n), sweep, infra_id, scene, pole.system_error_offset
        )
        for n, (sweep, pole) in enumerate(zip(frame.infrastructures, scene.poles, strict=True))
    ]
    world = [
        {"type": kind, "world_8_points": corners.tolist()}
        | ({} if number is None else {LABEL_AGENT_KEY: agent_id_of(VEHICLE, number)})
        for kind, corners, number in zip(
            frame.world_kinds, box_corners(frame.world_boxes), frame.world_agents, strict=True
        )
    ]
    _write_json(root / "cooperative" / "label_world" / f"{vehicle_id}.json", world)
    dx, dy = scene.poles[0].system_error_offset
    cooperative: dict = {
        "infrastructure_image_path": f"infrastructure-side/image/{infra_id}.jpg",
        "infrastructure_pointcloud_path": f"infrastructure-side/velodyne/{infra_id}.pcd",
        "vehicle_image_path": f"vehicle-side/image/{vehicle_id}.jpg",
        "vehicle_pointcloud_path": f"vehicle-side/velodyne/{vehicle_id}.pcd",
        "cooperative_label_path": f"cooperative/label_world/{vehicle_id}.json",
        "system_error_offset": {"delta_x": dx, "delta_y": dy},
    }
    others = [
        {"pointcloud_path": f"{side_folder(VEHICLE, n)}/velodyne/{vehicle_id}.pcd"}
        for n in range(1, len(frame.vehicles))
    ] + [
        {
            "pointcloud_path": f"{side_folder(INFRASTRUCTURE, n)}/velodyne/{infra_id}.pcd",
            "system_error_offset": {
                "delta_x": pole.system_error_offset[0],
                "delta_y": pole.system_error_offset[1],
            },
        }
        for n, pole in enumerate(scene.poles[1:], start=1)
    ]
    if others:
        cooperative[OTHER_AGENTS_KEY] = others
    return cooperative, vehicles, infrastructures


_SIDE_SUBFOLDERS: dict[str, tuple[str, ...]] = {
    VEHICLE: ("velodyne", "calib/lidar_to_novatel", "calib/novatel_to_world", "label/lidar"),
    INFRASTRUCTURE: ("velodyne", "calib/virtuallidar_to_world", "label/virtuallidar"),
}


def _side_directories(vehicles: int, rsus: int) -> list[str]:
    """Folders a dataset of ``vehicles`` + ``rsus`` agents needs, relative to its root."""
    return ["cooperative/label_world"] + [
        f"{side_folder(role, n)}/{sub}"
        for role, count in ((VEHICLE, vehicles), (INFRASTRUCTURE, rsus))
        for n in range(count)
        for sub in _SIDE_SUBFOLDERS[role]
    ]


def _frames_per_scene(frames: int, scenes: int | None, config: SynthConfig) -> list[int]:
    if scenes is None:
        scenes = max(min(frames, 2), math.ceil(frames / config.frames_per_scene))
    if not 1 <= scenes <= frames:
        raise ValueError(f"scenes must be in [1, frames={frames}], got {scenes}")
    return [frames // scenes + (i < frames % scenes) for i in range(scenes)]


def generate_dataset(
    out_dir: str | os.PathLike,
    frames: int,
    seed: int,
    *,
    scenes: int | None = None,
    config: SynthConfig = SynthConfig(),
    overwrite: bool = False,
    progress: bool = True,
) -> GenerationSummary:
    """Write a synthetic DAIR-V2X-C root with ``frames`` cooperative frames to ``out_dir``.

    Scenes get consecutive frames; the last ``val_fraction`` of the scenes (at least one
    when there are two or more) form the val split. Deterministic for a given seed and
    settings. Written into a hidden sibling folder that is renamed when complete.
    """
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    if config.vehicles < 1 or not 1 <= config.rsus <= len(POLE_CORNERS):
        raise ValueError(
            f"need vehicles >= 1 and 1 <= rsus <= {len(POLE_CORNERS)}, got {config.vehicles}, {config.rsus}"
        )
    delay_ms = config.partner_delay_ms
    if delay_ms is not None and not 0.0 <= delay_ms[0] <= delay_ms[1]:
        raise ValueError(f"partner_delay_ms must be (low, high) with 0 <= low <= high, got {delay_ms}")
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise DatasetError(f"{out}: exists already (use overwrite to replace it)")
    lengths = _frames_per_scene(frames, scenes, config)
    n_val = (
        0 if len(lengths) < 2 else min(len(lengths) - 1, max(1, round(len(lengths) * config.val_fraction)))
    )
    started = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    summary = GenerationSummary(out, frames, len(lengths))
    try:
        for directory in _side_directories(config.vehicles, config.rsus):
            (partial / directory).mkdir(parents=True)
        ids_rng = np.random.default_rng([seed, 1 << 20])
        delay_rng = np.random.default_rng([seed, 1 << 21])  # drawn only with partner_delay_ms
        next_vehicle, next_infra = 0, int(ids_rng.integers(0, 50))
        start_us = FIRST_STAMP_US + int(ids_rng.integers(0, 1_000_000_000))
        agents_rng = np.random.default_rng([seed, 1 << 22])  # the agents beyond the first two
        cooperative: list[dict] = []
        vehicle_info: list[list[dict]] = [[] for _ in range(config.vehicles)]
        infra_info: list[list[dict]] = [[] for _ in range(config.rsus)]
        with tqdm(total=frames, desc="synth", unit="frame", disable=not progress) as bar:
            for index, length in enumerate(lengths):
                scene = make_scene(
                    np.random.default_rng([seed, index]),
                    index,
                    length,
                    road_users=config.road_users,
                    start_us=start_us,
                )
                add_agents(scene, agents_rng, vehicles=config.vehicles, rsus=config.rsus)
                vehicle_model = vehicle_lidar(
                    beams=config.vehicle_beams, azimuth_step_deg=config.vehicle_azimuth_step_deg
                )
                infrastructure_models = [
                    infrastructure_lidar(
                        rings=config.infrastructure_rings,
                        azimuth_step_deg=config.infrastructure_azimuth_step_deg,
                        pitch_deg=pole.pitch_deg,
                    )
                    for pole in scene.poles
                ]
                vehicle_ids = [f"{next_vehicle + k:06d}" for k in range(length)]
                for k in range(length):
                    delay_us = None if delay_ms is None else round(delay_rng.uniform(*delay_ms) * 1000)
                    frame = render_frame(
                        scene,
                        k,
                        vehicle_model,
                        infrastructure_models,
                        seed=seed,
                        label_min_points=config.label_min_points,
                        label_range_m=config.label_range_m,
                        partner_delay_us=delay_us,
                    )
                    batch = (vehicle_ids[0], vehicle_ids[-1])
                    record, vehicles, infrastructures = _write_frame(
                        partial, frame, scene, vehicle_ids[k], f"{next_infra + k:06d}", batch
                    )
                    cooperative.append(record)
                    for tables, records in ((vehicle_info, vehicles), (infra_info, infrastructures)):
                        for table, side_record in zip(tables, records, strict=True):
                            table.append(side_record)
                    bar.update()
                (summary.val_ids if index >= len(lengths) - n_val else summary.train_ids).extend(vehicle_ids)
                next_vehicle += length + int(ids_rng.integers(1, 40))
                next_infra += length + int(ids_rng.integers(1, 40))
                start_us += length * SWEEP_PERIOD_US + int(ids_rng.integers(2_000_000, 5_000_000))
        _write_json(partial / "cooperative" / "data_info.json", cooperative)
        for role, tables in ((VEHICLE, vehicle_info), (INFRASTRUCTURE, infra_info)):
            for n, table in enumerate(tables):
                _write_json(partial / side_folder(role, n) / "data_info.json", table)
        _write_json(partial / "train.json", summary.train_ids)
        _write_json(partial / "val.json", summary.val_ids)
        if out.exists():
            shutil.rmtree(out)
        os.replace(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    summary.seconds = time.perf_counter() - started
    log.info("wrote %d frames (%d scenes) to %s in %.1f s", frames, len(lengths), out, summary.seconds)
    return summary
