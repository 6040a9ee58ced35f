"""Partners under delay and pose noise: the sweep a delay picks, the noise, the grid and its plot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from revqom_nodes.cli import main
from revqom_nodes.data.bag import bag_frames, convert_to_bag
from revqom_nodes.data.dairv2x import DairV2XReader
from revqom_nodes.data.perturbation import PartnerPoseNoise, partner_schedule
from revqom_nodes.data.synthetic import generate_dataset
from revqom_nodes.evaluation.robustness import (
    GRID_DELAYS_MS,
    GRID_POSE_NOISE,
    PartnerPerturbation,
    PerturbedFrames,
)
from revqom_nodes.model_file import save_model
from revqom_nodes.perception.detector import build_detector
from revqom_nodes.training.config import config_from_dict
from tests.training.conftest import TINY_MODEL, TINY_SENSORS

torch.set_num_threads(1)
SEQUENCE = 6  # frames of the one scene: 2 of them have a pair 400 ms earlier


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic") / "dair"
    generate_dataset(root, SEQUENCE, 11, scenes=1, config=TINY_SENSORS, progress=False)
    return root


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, root: Path) -> dict[str, Path]:
    """Randomly initialised tiny raw-fusion and ego-only model files."""
    folder = tmp_path_factory.mktemp("models")
    paths = {}
    for name, overrides in (("raw", {"codec": None}), ("ego", {"codec": None, "mode": "ego_only"})):
        torch.manual_seed(0)
        values = {"model": {**TINY_MODEL, **overrides}, "data": {"root": str(root), "split": "all"}}
        config = config_from_dict(values, name)
        paths[name] = folder / f"{name}.pt"
        save_model(paths[name], build_detector(config.model), config.values)
    return paths


def _stamps(vehicle_ms: list[float], lag_ms: float = 30.0) -> list[tuple[int, int]]:
    return [(round(v * 1000), round((v - lag_ms) * 1000)) for v in vehicle_ms]


def test_delay_picks_the_pair_k_sweeps_earlier_in_the_same_sequence() -> None:
    # Two sequences at 10 Hz (a few hundred us of jitter), 5 s apart, the second listed first.
    first = [0.0, 100.2, 199.7, 300.1, 400.0]
    second = [5000.0 + 100 * i for i in range(3)]
    stamps = _stamps(second + first)
    schedule = partner_schedule(stamps, 200.0)
    assert schedule.pairs == [(2, 0), (5, 3), (6, 4), (7, 5)]
    assert schedule.dropped == 4
    assert schedule.ages_ms == pytest.approx([230.0, 229.7, 229.9, 230.3], abs=1e-3)  # 2 periods + lag
    assert partner_schedule(stamps, 240.0).pairs == schedule.pairs  # round to whole sweeps
    assert partner_schedule(stamps, 250.0).pairs == partner_schedule(stamps, 300.0).pairs  # halves up
    assert partner_schedule(stamps, 0.0).pairs == [(i, i) for i in range(8)]
    assert partner_schedule(stamps, 900.0).pairs == []
    gap = _stamps([0.0, 100.0, 300.0])  # a missing sweep: no pair 100 ms before the third frame
    assert partner_schedule(gap, 100.0).pairs == [(1, 0)] and partner_schedule(gap, 300.0).pairs == [(2, 0)]
    with pytest.raises(ValueError, match="delay_ms"):
        partner_schedule(stamps, -1.0)


def test_delayed_frames_take_the_partner_of_the_earlier_pair(root: Path) -> None:
    reader = DairV2XReader(root, "all")
    frames = list(reader)
    stamps = [reader.timestamps_us(i) for i in range(len(reader))]
    schedule = partner_schedule(stamps, 100.0)
    delayed = PerturbedFrames(frames, schedule, PartnerPerturbation(delay_ms=100.0))
    assert len(delayed) == SEQUENCE - 1 and schedule.dropped == 1
    for n, frame in enumerate(delayed):
        ego, partner = frames[n + 1], frames[n]
        assert frame.frame_id == ego.frame_id and frame.ego is ego.ego
        assert frame.agents[1] is partner.agents[1]  # its sweep and pose, untouched
        assert frame.ego.timestamp_us - frame.agents[1].timestamp_us == pytest.approx(
            schedule.ages_ms[n] * 1000
        )
        np.testing.assert_array_equal(frame.boxes_world, ego.boxes_world)  # ground truth at the ego's time
    assert all(49.0 < a < 151.0 for a in schedule.ages_ms)  # 100 ms and the pairing offset, +-15-50 ms


def test_pose_noise_only_on_partners_seeded_and_scaled(root: Path) -> None:
    reader = DairV2XReader(root, "all")
    frames = list(reader)
    schedule = partner_schedule([reader.timestamps_us(i) for i in range(len(reader))], 0.0)

    def partner_errors(xy_m: float, yaw_deg: float, seed: int) -> np.ndarray:
        """(frames, 3): dx, dy (m) and dyaw (deg) of each frame's partner pose."""
        errors = []
        noisy = PerturbedFrames(frames, schedule, PartnerPerturbation(0.0, xy_m, yaw_deg, seed))
        for frame, clean in zip(noisy, frames, strict=True):
            assert np.array_equal(frame.ego.T_world_from_lidar, clean.ego.T_world_from_lidar)
            assert frame.agents[1].points is clean.agents[1].points
            T, T0 = frame.agents[1].T_world_from_lidar, clean.agents[1].T_world_from_lidar
            dyaw = np.degrees(np.arctan2(T[1, 0], T[0, 0]) - np.arctan2(T0[1, 0], T0[0, 0]))
            errors.append([*(T[:2, 3] - T0[:2, 3]), (dyaw + 180) % 360 - 180])
        return np.array(errors)

    errors = partner_errors(0.4, 0.4, 3)
    assert np.all(errors != 0.0) and np.abs(errors).max() < 4 * 0.4
    np.testing.assert_array_equal(partner_errors(0.4, 0.4, 3), errors)  # reproducible
    np.testing.assert_allclose(partner_errors(0.2, 0.2, 3), errors / 2, atol=1e-9)  # same draws, scaled
    assert not np.allclose(partner_errors(0.4, 0.4, 4), errors)
    assert np.array_equal(partner_errors(0.0, 0.0, 3), np.zeros_like(errors))


def test_the_replay_noises_each_partner_pose_as_eval_does(root: Path, tmp_path: Path) -> None:
    """``replay.pose_noise`` on a bag of the frames gives every partner the pose ``revqom eval
    --pose-noise`` fuses it with (no delay)."""
    reader = DairV2XReader(root, "all")
    frames = list(reader)
    convert_to_bag(root, tmp_path / "bag", progress=False)
    replay = PartnerPoseNoise(bag_frames(tmp_path / "bag"), xy_m=0.4, yaw_deg=0.3, noise_seed=5)
    schedule = partner_schedule([reader.timestamps_us(i) for i in range(len(reader))], 0.0)
    for noisy, clean in zip(PerturbedFrames(frames, schedule, PartnerPerturbation(0.0, 0.4, 0.3, 5)), frames,
                            strict=True):
        for sent, partner in zip(noisy.agents[1:], clean.agents[1:], strict=True):
            live = replay.pose(partner.agent_id, partner.timestamp_us * 1000, partner.T_world_from_lidar)
            np.testing.assert_array_equal(live, sent.T_world_from_lidar)
            assert not np.allclose(live, partner.T_world_from_lidar)
        np.testing.assert_array_equal(
            replay.pose(clean.ego.agent_id, clean.ego.timestamp_us * 1000, clean.ego.T_world_from_lidar),
            noisy.ego.T_world_from_lidar,
        )


def test_eval_flags(models: dict[str, Path], root: Path, tmp_path: Path,
                    capsys: pytest.CaptureFixture[str]) -> None:
    base = ["eval", "--model", str(models["raw"]), "--data", str(root), "--split", "all", "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "clean.json")]) == 0
    assert main([*base, "--out", str(tmp_path / "zero.json"), "--delay-ms", "0", "--pose-noise", "0,0"]) == 0
    noisy = ["--delay-ms", "200", "--pose-noise", "0.2,0.2"]
    assert main([*base, "--out", str(tmp_path / "d.json"), *noisy]) == 0
    clean, zero, delayed = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("clean", "zero", "d"))
    assert zero["per_frame"] == clean["per_frame"] and zero["ap"] == clean["ap"]
    assert "partner_perturbation" not in clean
    summary = delayed["partner_perturbation"]
    assert delayed["frames"] == SEQUENCE - 2 and summary["frames_dropped"] == 2
    assert summary["delay_ms"] == 200.0 and summary["pose_noise"] == [0.2, 0.2]
    assert 149.0 < summary["partner_age_ms"]["mean"] < 251.0  # 200 ms and the pairing offset
    for flag, bad in (("--pose-noise", "0.2"), ("--pose-noise", "0.2,-1"), ("--delay-ms", "-100"),
                      ("--baselines", "only_one.pt")):
        with pytest.raises(SystemExit):
            main([*base, "--out", str(tmp_path / "x.json"), flag, bad])
        assert flag in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "x.json"), "--robustness", "--delay-ms", "100"]) == 2
    assert main([*base, "--out", str(tmp_path / "x.json"), "--delay-ms", "900"]) == 1


def test_robustness_grid_schema_and_plot(models: dict[str, Path], root: Path, tmp_path: Path) -> None:
    out = tmp_path / "grid" / "robustness.json"
    args = ["eval", "--robustness", "--model", str(models["raw"]), "--data", str(root), "--split", "all",
            "--baselines", f"{models['raw']},{models['ego']}", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    grid = json.loads(out.read_text())
    assert out.with_suffix(".png").stat().st_size > 10_000
    assert grid["frames"] == SEQUENCE - 4 and grid["frames_dropped"] == 4
    assert set(grid["partner_age_ms"]) == {str(d) for d in GRID_DELAYS_MS}
    rows = grid["rows"]
    assert len(rows) == 4 * 25
    cells = {(d, tuple(n)) for d in GRID_DELAYS_MS for n in GRID_POSE_NOISE}
    by_mode: dict[str, list[dict]] = {}
    for row in rows:
        assert set(row) == {"model", "mode", "delay_ms", "pose_noise", "ap"}
        assert set(row["ap"]) == {"0.3", "0.5", "0.7"}
        by_mode.setdefault(row["mode"], []).append(row)
    assert {m: len(r) for m, r in by_mode.items()} == {"raw": 50, "late": 25, "ego_only": 25}
    for mode_rows in (by_mode["late"], by_mode["ego_only"]):
        assert {(r["delay_ms"], tuple(r["pose_noise"])) for r in mode_rows} == cells
    assert len({json.dumps(r["ap"]) for r in by_mode["ego_only"]}) == 1  # the ego reads no partner
