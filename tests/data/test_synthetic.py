"""Synthetic generator: the DAIR-V2X-C layout, reader round trip, label transforms, determinism."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from revqom_nodes.data import synthetic
from revqom_nodes.data.dairv2x import DairV2XReader
from revqom_nodes.data.errors import DatasetError
from revqom_nodes.data.stats import dataset_stats
from revqom_nodes.data.synthetic import SynthConfig, generate_dataset
from revqom_nodes.geometry import wrap_angle
from tests.data.dair_fixtures import TINY, TINY_FRAMES, TINY_SCENES, TINY_SEED

MAX_SPEED_MPS = 14.0  # fastest road user of the generator
REPO_ROOT = Path(__file__).resolve().parents[2]


def _json(path: Path) -> object:
    return json.loads(path.read_text())


def test_layout_has_every_file_and_field(tiny_root: Path) -> None:
    pairs = _json(tiny_root / "cooperative/data_info.json")
    assert len(pairs) == TINY_FRAMES
    assert set(pairs[0]) == {
        "infrastructure_image_path",
        "infrastructure_pointcloud_path",
        "vehicle_image_path",
        "vehicle_pointcloud_path",
        "cooperative_label_path",
        "system_error_offset",
    }
    vehicle = _json(tiny_root / "vehicle-side/data_info.json")[0]
    assert set(vehicle) >= {
        "pointcloud_path",
        "pointcloud_timestamp",
        "image_path",
        "image_timestamp",
        "calib_lidar_to_novatel_path",
        "calib_novatel_to_world_path",
        "label_lidar_std_path",
        "batch_id",
        "batch_start_id",
        "batch_end_id",
        "intersection_loc",
    }
    infra = _json(tiny_root / "infrastructure-side/data_info.json")[0]
    assert set(infra) >= {
        "pointcloud_path",
        "pointcloud_timestamp",
        "calib_virtuallidar_to_world_path",
        "label_lidar_std_path",
        "batch_id",
        "intersection_loc",
    }
    assert len(vehicle["pointcloud_timestamp"]) == 16 and vehicle["pointcloud_timestamp"].isdigit()
    for pair in pairs:
        for key in ("vehicle_pointcloud_path", "infrastructure_pointcloud_path", "cooperative_label_path"):
            assert (tiny_root / pair[key]).is_file()
        assert pair["system_error_offset"]["delta_x"] != 0.0 and pair["system_error_offset"]["delta_y"] != 0.0
    vid = Path(pairs[0]["vehicle_pointcloud_path"]).stem
    iid = Path(pairs[0]["infrastructure_pointcloud_path"]).stem
    nested = _json(tiny_root / f"vehicle-side/calib/lidar_to_novatel/{vid}.json")
    assert set(nested) == {"transform"} and set(nested["transform"]) == {"rotation", "translation"}
    assert np.shape(nested["transform"]["translation"]) == (3, 1)
    assert set(_json(tiny_root / f"vehicle-side/calib/novatel_to_world/{vid}.json")) == {
        "rotation",
        "translation",
    }
    calib = _json(tiny_root / f"infrastructure-side/calib/virtuallidar_to_world/{iid}.json")
    assert set(calib) == {"rotation", "translation", "relative_error"}
    world = _json(tiny_root / f"cooperative/label_world/{vid}.json")
    assert world and all(np.shape(item["world_8_points"]) == (8, 3) for item in world)
    side = _json(tiny_root / f"vehicle-side/label/lidar/{vid}.json")
    assert side and set(side[0]) == {
        "type",
        "truncated_state",
        "occluded_state",
        "2d_box",
        "3d_dimensions",
        "3d_location",
        "rotation",
    }
    assert (tiny_root / f"infrastructure-side/label/virtuallidar/{iid}.json").is_file()
    assert b"DATA binary\n" in (tiny_root / pairs[0]["vehicle_pointcloud_path"]).read_bytes()[:300]
    assert {item["type"] for item in world} <= {"Car", "Van", "Truck", "Bus"}


def test_reader_round_trip_and_scene_split(tiny_root: Path) -> None:
    train, val, every = (DairV2XReader(tiny_root, s) for s in ("train", "val", "all"))
    assert len(every) == TINY_FRAMES and len(train) + len(val) == TINY_FRAMES and len(val) > 0
    assert not set(train.frame_ids) & set(val.frame_ids)
    batches = {r["pointcloud_path"]: r["batch_id"] for r in _json(tiny_root / "vehicle-side/data_info.json")}
    batch_of = {Path(k).stem: v for k, v in batches.items()}
    assert not {batch_of[i] for i in train.frame_ids} & {batch_of[i] for i in val.frame_ids}
    assert len(set(batches.values())) == TINY_SCENES
    for frame in every:
        vehicle, infra = frame.agents
        assert (
            vehicle.points.dtype == np.float32 and vehicle.points.shape[1] == 4 and len(vehicle.points) > 500
        )
        assert len(infra.points) > 500
        assert 0 <= vehicle.points[:, 3].min() and vehicle.points[:, 3].max() <= 255
        assert 10_000 <= abs(infra.timestamp_us - vehicle.timestamp_us) <= 51_000
        assert np.abs(vehicle.T_world_from_lidar[:2, 3]).max() > 500.0  # world offset of thousands of metres
        assert frame.system_error_offset != (0.0, 0.0)
        assert len(frame.boxes_world) == len(frame.labels) > 0
        # Vehicle-side LiDAR about 2 m above the ground: the ground sits near z = -2.
        assert np.percentile(vehicle.points[:, 2], 10) == pytest.approx(-2.0, abs=0.3)
    stamps = [f.ego.timestamp_us for f in every]
    gaps = np.diff(stamps)
    assert np.all((gaps[gaps < 1_000_000] >= 90_000) & (gaps[gaps < 1_000_000] <= 110_000))


def _match(boxes: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest target (xy) of each box -> (indices, distances)."""
    dist = np.linalg.norm(boxes[:, None, :2] - targets[None, :, :2], axis=-1)
    return dist.argmin(axis=1), dist.min(axis=1)


def test_world_8_points_match_single_side_labels(tiny_root: Path) -> None:
    """Cooperative boxes moved into each agent's frame equal that agent's own labels."""
    exact_infra = 0
    for frame in DairV2XReader(tiny_root, "all"):
        vehicle, infra = frame.agents
        coop = frame.boxes_in(vehicle.T_world_from_lidar)
        near = np.hypot(vehicle.boxes[:, 0], vehicle.boxes[:, 1]) < 95.0
        assert near.sum() > 0
        index, dist = _match(vehicle.boxes[near], coop)
        np.testing.assert_allclose(vehicle.boxes[near][:, :6], coop[index][:, :6], atol=1e-6)
        assert np.abs(wrap_angle(vehicle.boxes[near][:, 6] - coop[index][:, 6])).max() < 1e-6

        # The infrastructure sweep is tens of ms off: moving vehicles moved at most v * dt.
        coop_infra = frame.boxes_in(infra.T_world_from_lidar)
        dt = abs(infra.timestamp_us - vehicle.timestamp_us) * 1e-6
        ego_in_infra = (np.linalg.inv(infra.T_world_from_lidar) @ vehicle.T_world_from_lidar)[:2, 3]
        near_ego = np.hypot(*(infra.boxes[:, :2] - ego_in_infra).T) < 95.0  # the cooperative label's range
        index, dist = _match(infra.boxes, coop_infra)
        matched = dist <= MAX_SPEED_MPS * dt + 1e-6
        unmatched = infra.boxes[near_ego & ~matched]
        assert len(unmatched) <= 1  # the ego vehicle itself, which the cooperative label leaves out
        if len(unmatched):
            assert np.hypot(*(unmatched[0, :2] - ego_in_infra)) < MAX_SPEED_MPS * dt + 0.5
        np.testing.assert_allclose(
            infra.boxes[matched][:, 3:6], coop_infra[index[matched]][:, 3:6], atol=1e-6
        )
        assert np.abs(wrap_angle(infra.boxes[matched][:, 6] - coop_infra[index[matched]][:, 6])).max() < 1e-6
        exact_infra += int((dist[matched] < 1e-6).sum())  # parked and queued vehicles
    assert exact_infra > 0


def _digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()


def test_deterministic_per_seed(tmp_path: Path, tiny_root: Path) -> None:
    again = generate_dataset(
        tmp_path / "a", TINY_FRAMES, TINY_SEED, scenes=TINY_SCENES, config=TINY, progress=False
    )
    assert _digest(again.root) == _digest(tiny_root)
    other = generate_dataset(tmp_path / "b", 1, TINY_SEED + 1, config=TINY, progress=False)
    assert (
        _json(other.root / "cooperative/data_info.json")
        != _json(tiny_root / "cooperative/data_info.json")[:1]
    )


# _digest(tiny_root) written by the generator before --partner-delay-ms existed (commit a7a47f0 and
# /work/wt-base), on a CPU without AVX-512: the default output must stay byte for byte what it was.
BASE_TINY_DIGEST = "a9d93a241bf44a6a1c5d7c5ceab88e97f7126b329072a58b65b6ac8f79e2e879"
# The last bits of the generator's floats depend on the CPU's kernels: OpenBLAS's matrix products
# and NumPy's AVX-512 loops (a Zen 4 CPU writes other bytes). These pin the AVX2 kernels the digest
# was made with, on any x86-64 CPU with AVX2 (README, "Synthetic data").
AVX2_KERNELS = {"OPENBLAS_CORETYPE": "Haswell", "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR"}


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="the digest is of x86-64 kernels")
def test_default_output_unchanged_since_partner_delay(tmp_path: Path) -> None:
    """Generated in a fresh process (the kernels are chosen when NumPy loads) with AVX2 kernels."""
    script = (
        "import sys; from pathlib import Path; from revqom_nodes.data.synthetic import generate_dataset; "
        "from tests.data.dair_fixtures import TINY, TINY_FRAMES, TINY_SCENES, TINY_SEED; "
        "generate_dataset(Path(sys.argv[1]), TINY_FRAMES, TINY_SEED, scenes=TINY_SCENES, config=TINY, "
        "progress=False)"
    )
    root = tmp_path / "dair"
    subprocess.run([sys.executable, "-c", script, str(root)], check=True, cwd=REPO_ROOT,
                   env={**os.environ, **AVX2_KERNELS, "PYTHONPATH": str(REPO_ROOT)})
    assert _digest(root) == BASE_TINY_DIGEST


def _side_files(root: Path, side: str) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / side).rglob("*")) if p.is_file()}


def test_partner_delay_renders_the_pole_sweep_earlier(tmp_path: Path, tiny_root: Path) -> None:
    """The pole's sweep is 300 ms older than the ego's, the traffic moved meanwhile, the ego's side
    and the ground truth's time are the ego's."""
    config = SynthConfig(**{**TINY.__dict__, "partner_delay_ms": (300.0, 300.0)})
    root = generate_dataset(
        tmp_path / "d", TINY_FRAMES, TINY_SEED, scenes=TINY_SCENES, config=config, progress=False
    ).root
    assert _side_files(root, "vehicle-side") == _side_files(tiny_root, "vehicle-side")
    moved = 0.0
    reader = DairV2XReader(root, "all")
    for index, frame in enumerate(reader):
        vehicle, infra = frame.agents
        assert reader.timestamps_us(index) == (vehicle.timestamp_us, infra.timestamp_us)
        assert vehicle.timestamp_us - infra.timestamp_us == 300_000
        coop = frame.boxes_in(vehicle.T_world_from_lidar)  # at the ego's stamp: its own labels
        _, dist = _match(vehicle.boxes, coop)
        assert dist[np.hypot(vehicle.boxes[:, 0], vehicle.boxes[:, 1]) < 95.0].max() < 1e-6
        _, dist = _match(infra.boxes, frame.boxes_in(infra.T_world_from_lidar))
        matched = dist <= MAX_SPEED_MPS * 0.3 + 1e-6
        assert (dist[matched] < 1e-6).any()  # parked and queued vehicles stay
        moved = max(moved, float(dist[matched].max()))
    assert moved > 1.0  # further than any vehicle moves in the default pairing's 15-50 ms


def test_partner_delay_range_is_drawn_per_frame_and_seeded(tmp_path: Path) -> None:
    config = SynthConfig(**{**TINY.__dict__, "partner_delay_ms": (100.0, 300.0)})

    def ages_ms(name: str) -> list[float]:
        root = generate_dataset(tmp_path / name, 6, 5, scenes=2, config=config, progress=False).root
        frames = DairV2XReader(root, "all")
        return [(f.ego.timestamp_us - f.agents[1].timestamp_us) / 1000 for f in frames]

    ages = ages_ms("a")
    assert all(100.0 <= a <= 300.0 for a in ages) and len(set(ages)) == len(ages)
    assert ages_ms("b") == ages
    with pytest.raises(ValueError, match="partner_delay_ms"):
        generate_dataset(tmp_path / "c", 1, 0, config=SynthConfig(partner_delay_ms=(300.0, 100.0)))


def test_existing_output_is_kept(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(DatasetError, match="exists already"):
        generate_dataset(out, 1, 0, config=TINY, progress=False)
    assert (out / "keep.txt").read_text() == "x"
    generate_dataset(out, 1, 0, config=TINY, progress=False, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "train.json").is_file()


def test_failure_leaves_nothing_half_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def failing_write(path: Path, points: np.ndarray) -> None:
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")
        Path(path).write_bytes(b"")

    monkeypatch.setattr(synthetic, "write_pcd", failing_write)
    with pytest.raises(OSError, match="disk full"):
        generate_dataset(tmp_path / "out", 3, 0, config=TINY, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_frames_and_scenes_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="scenes"):
        generate_dataset(tmp_path / "x", 2, 0, scenes=3, config=TINY, progress=False)
    with pytest.raises(ValueError, match="frames"):
        generate_dataset(tmp_path / "x", 0, 0, config=TINY, progress=False)
    assert not (tmp_path / "x").exists()


def test_stats_on_tiny_dataset(tiny_root: Path) -> None:
    stats = dataset_stats(tiny_root, progress=False)
    assert stats["frames"] == TINY_FRAMES
    assert stats["points_per_sweep"]["vehicle"] > 500 and stats["points_per_sweep"]["infrastructure"] > 500
    assert stats["objects_per_frame"] > 0 and 0.0 <= stats["cooperation_fraction"] <= 1.0
    parts = stats["ego_visible_fraction"] + stats["cooperation_fraction"] + stats["invisible_fraction"]
    assert parts == pytest.approx(1.0)
    json.dumps(stats)


@pytest.mark.slow
def test_default_settings_make_cooperation_matter(tmp_path: Path) -> None:
    """Default sensors and scenes: at least a quarter of the vehicles in range need the infrastructure."""
    generate_dataset(tmp_path / "d", 24, 0, scenes=12, config=SynthConfig(), progress=False)
    stats = dataset_stats(tmp_path / "d", progress=False)
    assert stats["cooperation_fraction"] >= 0.25
    assert 30_000 <= stats["points_per_sweep"]["vehicle"] <= 60_000
    assert 40_000 <= stats["points_per_sweep"]["infrastructure"] <= 80_000
