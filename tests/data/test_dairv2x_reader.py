"""DAIR-V2X-C reader on hand-written roots: transforms, labels, tolerance, clear errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from revqom_nodes.data.dairv2x import DairV2XReader, is_vehicle_type
from revqom_nodes.data.errors import DatasetError
from revqom_nodes.geometry import box_corners, invert, make_transform
from tests.data.dair_fixtures import (
    INFRA_STAMP,
    LIDAR_TO_NOVATEL,
    NOVATEL_TO_WORLD,
    OFFSET,
    VEHICLE_POINTS,
    VEHICLE_STAMP,
    VIRTUALLIDAR_TO_WORLD,
    WORLD_BOXES,
)

Builder = Callable[..., Path]


def _T(calib: dict) -> np.ndarray:
    return make_transform(np.array(calib["rotation"]), np.array(calib["translation"]).ravel())


def test_frame_contents(make_dair: Builder) -> None:
    reader = DairV2XReader(make_dair(), "train")
    assert len(reader) == 1 and reader.frame_ids == ["000010"]
    assert reader.pairing(0) == ("000010", "000084", (0.5, -0.25))
    frame = reader[0]
    vehicle, infra = frame.agents
    assert (vehicle.agent_id, vehicle.role, vehicle.frame_id) == ("vehicle", "vehicle", "000010")
    assert (infra.agent_id, infra.role, infra.frame_id) == ("infrastructure", "infrastructure", "000084")
    assert frame.ego is vehicle and frame.agent("infrastructure") is infra
    assert (vehicle.timestamp_us, infra.timestamp_us) == (VEHICLE_STAMP, INFRA_STAMP)
    np.testing.assert_array_equal(vehicle.points, VEHICLE_POINTS)
    np.testing.assert_array_equal(infra.points, [[5.0, 6.0, -5.5, 17], [7.5, -8.25, -5.0, 255]])
    assert vehicle.points.dtype == infra.points.dtype == np.float32

    # T_world_from_lidar = T_world_from_novatel @ T_novatel_from_lidar
    np.testing.assert_allclose(
        vehicle.T_world_from_lidar, _T(NOVATEL_TO_WORLD) @ _T(LIDAR_TO_NOVATEL), atol=1e-12
    )
    expected_infra = _T(VIRTUALLIDAR_TO_WORLD)
    expected_infra[:2, 3] += (OFFSET["delta_x"], OFFSET["delta_y"])  # system_error_offset added
    np.testing.assert_allclose(infra.T_world_from_lidar, expected_infra, atol=1e-12)
    assert vehicle.T_world_from_lidar.dtype == np.float64

    # Cooperative labels: Pedestrian dropped, boxes decoded from world_8_points.
    assert frame.labels == ["Car", "Truck"]
    np.testing.assert_allclose(frame.boxes_world, WORLD_BOXES, atol=1e-9)
    assert frame.system_error_offset == (0.5, -0.25)

    # Single-side labels: Cyclist dropped, the zero-width Van skipped.
    assert vehicle.labels == ["Car"] and infra.labels == ["Bus"]
    np.testing.assert_allclose(vehicle.boxes, [[12.5, 2.0, -1.0, 4.2, 1.8, 1.5, 0.25]])
    np.testing.assert_allclose(infra.boxes, [[-7.0, 2.0, -1.0, 11.0, 2.5, 3.2, -1.5]])


def test_boxes_in_agent_frames(make_dair: Builder) -> None:
    frame = DairV2XReader(make_dair(), "all")[0]
    for agent in frame.agents:
        local = frame.boxes_in(agent.T_world_from_lidar)
        corners = box_corners(frame.boxes_world)
        T = invert(agent.T_world_from_lidar)
        np.testing.assert_allclose(box_corners(local), corners @ T[:3, :3].T + T[:3, 3], atol=1e-9)
    np.testing.assert_allclose(frame.boxes_in(np.eye(4)), WORLD_BOXES, atol=1e-9)


def test_splits(make_dair: Builder) -> None:
    root = make_dair()
    assert len(DairV2XReader(root, "val")) == 0
    assert len(DairV2XReader(root, "all")) == 1
    (root / "val.json").write_text(json.dumps(["000010", "000999"]))
    assert DairV2XReader(root, "val").frame_ids == ["000010"]
    with pytest.raises(ValueError, match="split"):
        DairV2XReader(root, "test")


@pytest.mark.parametrize("offset", ["", {"delta_x": "", "delta_y": ""}, None])
def test_offset_given_as_empty_string(make_dair: Builder, offset: object) -> None:
    frame = DairV2XReader(make_dair(offset=offset), "all")[0]
    assert frame.system_error_offset == (0.0, 0.0)
    np.testing.assert_allclose(frame.agents[1].T_world_from_lidar, _T(VIRTUALLIDAR_TO_WORLD), atol=1e-12)


def test_offset_as_strings(make_dair: Builder) -> None:
    frame = DairV2XReader(make_dair(offset={"delta_x": "0.5", "delta_y": "-0.25"}), "all")[0]
    assert frame.system_error_offset == (0.5, -0.25)


def test_numbers_given_as_strings(make_dair: Builder) -> None:
    frame = DairV2XReader(make_dair(strings=True), "all")[0]
    np.testing.assert_allclose(frame.agents[0].boxes, [[12.5, 2.0, -1.0, 4.2, 1.8, 1.5, 0.25]])
    np.testing.assert_allclose(frame.agents[1].boxes, [[-7.0, 2.0, -1.0, 11.0, 2.5, 3.2, -1.5]])


@pytest.mark.parametrize("case", [str.lower, str.upper, str.swapcase])
def test_type_names_in_any_case(make_dair: Builder, case: Callable[[str], str]) -> None:
    frame = DairV2XReader(make_dair(type_case=case), "all")[0]
    assert frame.labels == [case("Car"), case("Truck")]
    assert frame.agents[0].labels == [case("Car")] and frame.agents[1].labels == [case("Bus")]
    assert is_vehicle_type(" vAn ") and not is_vehicle_type("Pedestrian")


def test_label_path_key_spellings(make_dair: Builder) -> None:
    frame = DairV2XReader(make_dair(label_key="label_lidar_path"), "all")[0]
    assert frame.agents[0].labels == ["Car"] and frame.agents[1].labels == ["Bus"]


def test_relative_error_values_empty(make_dair: Builder) -> None:
    frame = DairV2XReader(make_dair(relative_error={"delta_x": "", "delta_y": ""}), "all")[0]
    assert frame.agents[1].T_world_from_lidar[0, 3] == pytest.approx(2530.5)


def test_missing_images_are_not_needed(make_dair: Builder) -> None:
    root = make_dair()
    assert not (root / "vehicle-side" / "image").exists()
    assert len(DairV2XReader(root, "all")[0].agents) == 2


@pytest.mark.parametrize(
    "relative, what",
    [
        ("vehicle-side/calib/novatel_to_world/000010.json", "missing calibration"),
        ("infrastructure-side/velodyne/000084.pcd", "cannot read point cloud"),
        ("cooperative/label_world/000010.json", "missing cooperative label"),
        ("vehicle-side/label/lidar/000010.json", "missing single-side label"),
    ],
)
def test_missing_file_names_path_and_frame(make_dair: Builder, relative: str, what: str) -> None:
    root = make_dair()
    (root / relative).unlink()
    reader = DairV2XReader(root, "all")
    with pytest.raises(DatasetError) as info:
        reader[0]
    message = str(info.value)
    assert message.startswith("frame 000010: ") and str(root / relative) in message and what in message


@pytest.mark.parametrize(
    "relative", ["cooperative/data_info.json", "vehicle-side/data_info.json", "train.json"]
)
def test_malformed_index_json(make_dair: Builder, relative: str) -> None:
    root = make_dair()
    (root / relative).write_text('[{"vehicle_pointcloud_path": ')
    with pytest.raises(DatasetError, match=f"{root / relative}: malformed"):
        DairV2XReader(root, "train")


def test_malformed_calibration(make_dair: Builder) -> None:
    root = make_dair()
    (root / "vehicle-side/calib/lidar_to_novatel/000010.json").write_text(
        '{"transform": {"rotation": [[1]]}}'
    )
    with pytest.raises(
        DatasetError, match=r"frame 000010: .*lidar_to_novatel/000010\.json: calibration needs"
    ):
        DairV2XReader(root, "all")[0]


@pytest.mark.parametrize(
    "labels, message",
    [
        ([{"type": "Car", "world_8_points": [[0, 0, 0]] * 7}], "world_8_points"),
        ([{"type": "Car"}], "world_8_points"),
        ({"type": "Car"}, "JSON list"),
    ],
)
def test_malformed_cooperative_label(make_dair: Builder, labels: object, message: str) -> None:
    root = make_dair()
    (root / "cooperative/label_world/000010.json").write_text(json.dumps(labels))
    with pytest.raises(DatasetError, match=rf"frame 000010: .*label_world/000010\.json.*{message}"):
        DairV2XReader(root, "all")[0]


def test_malformed_side_label(make_dair: Builder) -> None:
    root = make_dair()
    label = root / "vehicle-side/label/lidar/000010.json"
    label.write_text(json.dumps([{"type": "Car", "3d_location": {"x": 1}, "rotation": 0}]))
    with pytest.raises(DatasetError, match=r"frame 000010: .*lidar/000010\.json \(label 0\): missing"):
        DairV2XReader(root, "all")[0]
    label.write_text(
        json.dumps(
            [
                {
                    "type": "Car",
                    "3d_location": {"x": "a", "y": 0, "z": 0},
                    "3d_dimensions": {"h": 1, "w": 1, "l": 1},
                    "rotation": 0,
                }
            ]
        )
    )
    with pytest.raises(DatasetError, match="expected a number, got 'a'"):
        DairV2XReader(root, "all")[0]


def test_unknown_side_record(make_dair: Builder) -> None:
    root = make_dair()
    (root / "infrastructure-side/data_info.json").write_text("[]")
    with pytest.raises(DatasetError, match=r"frame 000010: .*no record for frame 000084"):
        DairV2XReader(root, "all")[0]
