"""Test inputs of the data tests: the tiny generator settings and hand-written DAIR-V2X-C roots."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from revqom_nodes.data.pcd import write_pcd
from revqom_nodes.data.synthetic import SynthConfig

# Sparse sensors keep the tests fast; the scenes are the default ones.
TINY = SynthConfig(
    vehicle_beams=16,
    vehicle_azimuth_step_deg=1.0,
    infrastructure_rings=40,
    infrastructure_azimuth_step_deg=1.0,
)
TINY_FRAMES, TINY_SEED, TINY_SCENES = 4, 7, 2


def _rz(deg: float) -> list[list[float]]:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]


# Hand-written cooperative boxes (world frame): an axis-aligned Car and a Truck heading +y.
WORLD_BOXES = np.array(
    [[2510.0, -1195.0, 21.0, 4.0, 2.0, 1.5, 0.0], [2520.0, -1190.0, 21.5, 4.0, 2.0, 2.5, np.pi / 2]]
)
WORLD_LABELS = [
    {
        "type": "Car",
        "world_8_points": [
            [2512, -1194, 20.25],
            [2512, -1196, 20.25],
            [2508, -1196, 20.25],
            [2508, -1194, 20.25],
            [2512, -1194, 21.75],
            [2512, -1196, 21.75],
            [2508, -1196, 21.75],
            [2508, -1194, 21.75],
        ],
    },
    {
        "type": "Truck",
        "world_8_points": [
            [2519, -1188, 20.25],
            [2521, -1188, 20.25],
            [2521, -1192, 20.25],
            [2519, -1192, 20.25],
            [2519, -1188, 22.75],
            [2521, -1188, 22.75],
            [2521, -1192, 22.75],
            [2519, -1192, 22.75],
        ],
    },
    {"type": "Pedestrian", "world_8_points": [[2500, -1200, 20]] * 4 + [[2500.5, -1199.5, 21.7]] * 4},
]
LIDAR_TO_NOVATEL = {"rotation": _rz(90.0), "translation": [[0.5], [1.0], [1.5]]}
NOVATEL_TO_WORLD = {"rotation": _rz(30.0), "translation": [[2500.0], [-1200.0], [20.0]]}
VIRTUALLIDAR_TO_WORLD = {"rotation": _rz(-45.0), "translation": [[2530.0], [-1180.0], [26.0]]}
OFFSET = {"delta_x": 0.5, "delta_y": -0.25}
VEHICLE_STAMP, INFRA_STAMP = 1626155123456789, 1626155123486001
VEHICLE_POINTS = np.array([[1.0, 2.0, -1.5, 10.0], [20.0, -3.0, 0.5, 200.0]], dtype=np.float32)
INFRA_PCD_ASCII = (
    "# .PCD v0.7\nVERSION 0.7\nFIELDS x y z intensity\nSIZE 4 4 4 1\nTYPE F F F U\nCOUNT 1 1 1 1\n"
    "WIDTH 3\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS 3\nDATA ascii\n"
    "5.0 6.0 -5.5 17\nnan nan nan 0\n7.5 -8.25 -5.0 255\n"
)


def _side_label(
    kind: str, x: object, yaw: object, dims: tuple[object, object, object] = (1.5, 1.8, 4.2)
) -> dict:
    h, w, l = dims
    return {
        "type": kind,
        "truncated_state": 0,
        "occluded_state": 1,
        "2d_box": {"xmin": 0, "ymin": 0, "xmax": 0, "ymax": 0},
        "3d_dimensions": {"h": h, "w": w, "l": l},
        "3d_location": {"x": x, "y": 2.0, "z": -1.0},
        "rotation": yaw,
    }


def build_dair(
    root: Path,
    *,
    offset: object = OFFSET,
    strings: bool = False,
    label_key: str = "label_lidar_std_path",
    relative_error: object = None,
    type_case: Callable[[str], str] = str,
) -> Path:
    num = (lambda v: str(v)) if strings else (lambda v: v)
    files: dict[str, object] = {
        "train.json": ["000010"],
        "val.json": [],
        "cooperative/data_info.json": [
            {
                "infrastructure_image_path": "infrastructure-side/image/000084.jpg",
                "infrastructure_pointcloud_path": "infrastructure-side/velodyne/000084.pcd",
                "vehicle_image_path": "vehicle-side/image/000010.jpg",
                "vehicle_pointcloud_path": "vehicle-side/velodyne/000010.pcd",
                "cooperative_label_path": "cooperative/label_world/000010.json",
                "system_error_offset": offset,
            }
        ],
        "cooperative/label_world/000010.json": [
            dict(item, type=type_case(item["type"])) for item in WORLD_LABELS
        ],
        "vehicle-side/data_info.json": [
            {
                "image_path": "image/000010.jpg",
                "image_timestamp": str(VEHICLE_STAMP + 900),
                "pointcloud_path": "velodyne/000010.pcd",
                "pointcloud_timestamp": str(VEHICLE_STAMP),
                "calib_lidar_to_novatel_path": "calib/lidar_to_novatel/000010.json",
                "calib_novatel_to_world_path": "calib/novatel_to_world/000010.json",
                label_key: "label/lidar/000010.json",
                "batch_id": "3",
                "batch_start_id": "000010",
                "batch_end_id": "000010",
                "intersection_loc": "x",
            }
        ],
        "infrastructure-side/data_info.json": [
            {
                "image_path": "image/000084.jpg",
                "image_timestamp": str(INFRA_STAMP + 900),
                "pointcloud_path": "velodyne/000084.pcd",
                "pointcloud_timestamp": str(INFRA_STAMP),
                "calib_virtuallidar_to_world_path": "calib/virtuallidar_to_world/000084.json",
                label_key: "label/virtuallidar/000084.json",
                "batch_id": "3",
                "intersection_loc": "x",
            }
        ],
        "vehicle-side/calib/lidar_to_novatel/000010.json": {"transform": LIDAR_TO_NOVATEL},
        "vehicle-side/calib/novatel_to_world/000010.json": NOVATEL_TO_WORLD,
        "infrastructure-side/calib/virtuallidar_to_world/000084.json": dict(
            VIRTUALLIDAR_TO_WORLD, relative_error=relative_error or {"delta_x": 0.1, "delta_y": 0.2}
        ),
        "vehicle-side/label/lidar/000010.json": [
            _side_label(type_case("Car"), num(12.5), num(0.25), (num(1.5), num(1.8), num(4.2))),
            _side_label("Cyclist", 3.0, 0.0),
            _side_label(type_case("Van"), 30.0, 1.0, (2.0, 0.0, 5.0)),  # zero width: skipped
        ],
        "infrastructure-side/label/virtuallidar/000084.json": [
            _side_label(type_case("Bus"), num(-7.0), num(-1.5), (num(3.2), num(2.5), num(11.0))),
        ],
    }
    for relative, data in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data), encoding="utf-8")
    (root / "vehicle-side/velodyne").mkdir(parents=True)
    write_pcd(root / "vehicle-side/velodyne/000010.pcd", VEHICLE_POINTS)
    (root / "infrastructure-side/velodyne").mkdir(parents=True)
    (root / "infrastructure-side/velodyne/000084.pcd").write_text(INFRA_PCD_ASCII, encoding="ascii")
    return root
