"""``revqom eval`` on many agents: every partner in range is fused (up to the fusion node's partner
limits), ``ap_by_partners`` counts the ego with its k nearest partners, ``--ego`` evaluates another
vehicle's view."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from revqom_nodes.data.dairv2x import CooperativeFrame, DairV2XReader
from revqom_nodes.data.synthetic import generate_dataset
from revqom_nodes.evaluation.errors import EvaluationError
from revqom_nodes.evaluation.runner import evaluate_model, nearest_partners
from revqom_nodes.geometry import invert
from revqom_nodes.model_file import load_model
from revqom_nodes.runtime.selection import PartnerLimits
from tests.data.dair_fixtures import TINY
from tests.runtime.tiny_model import save_tiny_model


def test_nearest_partners_orders_by_horizontal_distance() -> None:
    poses = np.stack([np.eye(4)] * 4)
    poses[1, :3, 3] = [30.0, 0.0, 0.0]
    poses[2, :3, 3] = [0.0, -10.0, 50.0]  # height does not count
    poses[3, :3, 3] = [20.0, 0.0, 0.0]
    assert nearest_partners(poses) == [2, 3, 1]


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """2 frames with 2 vehicles + 2 roadside units, and the tiny runtime model."""
    base = tmp_path_factory.mktemp("many_eval")
    generate_dataset(base / "dair", 2, 5, scenes=1, config=replace(TINY, vehicles=2, rsus=2), progress=False)
    save_tiny_model(base / "tiny.pt")
    return base / "dair", base / "tiny.pt"


def _only(frame: CooperativeFrame, order: list[int]) -> CooperativeFrame:
    return replace(frame, agents=[frame.agents[i] for i in order])


def test_ap_by_partners_fuses_the_nearest_k(many: tuple[Path, Path]) -> None:
    root, model = many
    loaded = load_model(model, "cpu")
    reader = DairV2XReader(root, "all")
    frames = [reader.ego_frame(i, "vehicle_1") for i in range(len(reader))]
    result = evaluate_model(loaded, frames, name="tiny", progress=False, by_partners=True)
    assert [f["agents"] for f in result["per_frame"]] == [4, 4]  # every partner is in range
    assert set(result["ap_by_partners"]) == {"0", "1", "2", "3"}
    for k in (0, 3):
        subsets = []
        for frame in frames:
            T_ego_from_world = invert(frame.ego.T_world_from_lidar)
            poses = np.stack([T_ego_from_world @ a.T_world_from_lidar for a in frame.agents])
            subsets.append(_only(frame, [0, *nearest_partners(poses)[:k]]))
        alone = evaluate_model(loaded, subsets, name="tiny", progress=False)
        assert result["ap_by_partners"][str(k)] == alone["ap"], k


def test_eval_cli_ego_and_ap_by_partners(many: tuple[Path, Path], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from revqom_nodes.cli import main

    root, model = many
    out = tmp_path / "v1.json"
    assert main(["eval", "--model", str(model), "--data", str(root), "--split", "all", "--ego", "vehicle_1",
                 "--device", "cpu", "--no-progress", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["ego"] == "vehicle_1" and set(result["ap_by_partners"]) == {"0", "1", "2", "3"}
    reader = DairV2XReader(root, "all")
    frames = [reader.ego_frame(i, "vehicle_1") for i in range(len(reader))]
    assert [f["gt"] for f in result["per_frame"]] == [
        np.round(f.boxes_in(f.ego.T_world_from_lidar), 5).tolist() for f in frames
    ]
    assert main(["eval", "--model", str(model), "--data", str(root), "--split", "all", "--ego",
                 "infrastructure", "--device", "cpu", "--no-progress", "--out", str(out)]) == 1


def test_partner_limits_fuse_the_nearest_as_the_fusion_node_does(many: tuple[Path, Path]) -> None:
    """``evaluate_model``'s limits go to the fusion node's engine (``runtime.selection``): one
    partner is the nearest one, as ``ap_by_partners`` counts it, and the bytes follow."""
    root, model = many
    loaded = load_model(model, "cpu")
    reader = DairV2XReader(root, "all")
    frames = [reader.ego_frame(i, "vehicle_1") for i in range(len(reader))]
    everyone = evaluate_model(loaded, frames, name="tiny", progress=False, by_partners=True)
    one = evaluate_model(loaded, frames, name="tiny", progress=False, limits=PartnerLimits(max_partners=1))
    assert everyone["partner_limits"] == {"max_partners": 0, "max_bytes_per_frame": 0}
    assert [f["fused"] for f in everyone["per_frame"]] == [[0, 1, 2, 3]] * 2
    assert everyone["partners_per_frame"] == 3
    assert one["partners_per_frame"] == 1 and one["ap"] == everyone["ap_by_partners"]["1"]
    for frame, result in zip(frames, one["per_frame"], strict=True):
        T_ego_from_world = invert(frame.ego.T_world_from_lidar)
        poses = np.stack([T_ego_from_world @ a.T_world_from_lidar for a in frame.agents])
        assert result["fused"] == [0, nearest_partners(poses)[0]]
    fused_bytes = [sum(f["bytes"]["entropy"][a] for a in f["fused"][1:]) for f in one["per_frame"]]
    assert one["partner_bytes_per_frame"]["entropy"] == np.mean(fused_bytes)
    assert one["partner_bytes_per_frame"]["entropy"] < everyone["partner_bytes_per_frame"]["entropy"]


def test_eval_cli_partner_limits(many: tuple[Path, Path], tmp_path: Path) -> None:
    from revqom_nodes.cli import main

    root, model = many
    out = tmp_path / "limited.json"
    common = ["eval", "--model", str(model), "--data", str(root), "--split", "all", "--ego", "vehicle_1",
              "--device", "cpu", "--no-progress", "--out", str(out)]
    assert main([*common, "--max-bytes-per-frame", "1"]) == 0  # no partner's map fits in one byte
    result = json.loads(out.read_text())
    assert result["partner_limits"] == {"max_partners": 0, "max_bytes_per_frame": 1}
    assert result["partners_per_frame"] == 0 and result["ap"] == result["ap_by_partners"]["0"]
    assert result["partner_bytes_per_frame"] == {"packed": 0.0, "entropy": 0.0}
    assert main([*common, "--max-partners", "-1"]) == 2


def test_partner_limits_need_a_model_that_sends_indices(many: tuple[Path, Path]) -> None:
    root, model = many
    raw = load_model(model, "cpu")._replace(codec_state=None)  # raw fusion: float maps, no fusion engine
    frames = [DairV2XReader(root, "all").ego_frame(0, "vehicle_1")]
    with pytest.raises(EvaluationError, match="partner limits need a model that sends codebook indices"):
        evaluate_model(raw, frames, name="raw", progress=False, limits=PartnerLimits(max_partners=1))


def test_eval_cli_by_partners_on_two_agents(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--by-partners`` adds ``ap_by_partners`` on a two-agent set: "0" is the ego alone, "1" the
    cooperative AP."""
    from revqom_nodes.cli import main

    generate_dataset(tmp_path / "dair", 2, 5, scenes=1, config=TINY, progress=False)
    save_tiny_model(tmp_path / "tiny.pt")
    command = ["eval", "--model", str(tmp_path / "tiny.pt"), "--data", str(tmp_path / "dair"),
               "--split", "all", "--device", "cpu", "--no-progress", "--out", str(tmp_path / "out.json")]
    assert main(command) == 0
    assert "ap_by_partners" not in json.loads((tmp_path / "out.json").read_text())
    assert main([*command, "--by-partners"]) == 0
    result = json.loads((tmp_path / "out.json").read_text())
    assert set(result["ap_by_partners"]) == {"0", "1"} and result["ap_by_partners"]["1"] == result["ap"]
