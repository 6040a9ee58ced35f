"""``revqom eval`` end to end on a few generated frames: codec (through the wire), raw, ego, late."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL

from revqom_nodes.cli import main
from revqom_nodes.codec.wire import packed_size
from revqom_nodes.data.dairv2x import DairV2XReader
from revqom_nodes.evaluation.ap import evaluate
from revqom_nodes.model_file import save_model
from revqom_nodes.perception.detector import build_detector
from revqom_nodes.training.config import config_from_dict
from revqom_nodes.training.dataset import CooperativeDataset
from revqom_nodes.training.export import export_model

torch.set_num_threads(1)


def _model(path: Path, root: Path, **model_overrides: object) -> Path:
    """A randomly initialised tiny model file; codec models get tables measured on ``root``."""
    torch.manual_seed(0)
    values = {"model": {**TINY_MODEL, **model_overrides}, "train": {"entropy_table_frames": 2},
              "data": {"root": str(root), "split": "all"}}
    config = config_from_dict(values, path.stem)
    detector = build_detector(config.model)
    if detector.codec is None:
        save_model(path, detector, config.values)
        return path
    dataset = CooperativeDataset(DairV2XReader(root, "all"), config.model.grid, max_agents=2,
                                 comm_range_m=100.0, augment=None)
    export_model(detector, config, path, provenance={"command": "test"}, dataset=dataset, progress=False)
    assert path.with_name(f"{path.stem}.provenance.json").is_file()
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, tiny_root: Path) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    return {
        "codec": _model(folder / "codec.pt", tiny_root),
        "raw": _model(folder / "raw.pt", tiny_root, codec=None),
        "ego": _model(folder / "ego.pt", tiny_root, codec=None, mode="ego_only"),
    }


def test_codec_model_goes_through_the_wire(models: dict[str, Path], tiny_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "codec.json"
    args = ["eval", "--model", str(models["codec"]), "--data", str(tiny_root), "--split", "all",
            "--frames", "2", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    result = json.loads(out.read_text())
    for key in ("ap", "frames", "bytes_per_agent_frame", "bpp", "per_frame", "model", "mode", "codebook_id",
                "eval_range_m", "eval_range_note", "entropy_bits_per_stage"):
        assert key in result, key
    assert set(result["ap"]) == {"0.3", "0.5", "0.7"}
    assert result["frames"] == len(result["per_frame"]) == 2 and result["mode"] == "revqom"
    height, width = result["bev_shape"]
    codec = TINY_MODEL["codec"]
    packed = packed_size(height, width, codec["num_quantizers"], codec["codebook_size"])
    assert result["bytes_per_agent_frame"]["packed"] == packed
    assert result["bytes_per_agent_frame"]["entropy"] <= packed
    assert result["bpp"]["packed"] == pytest.approx(packed * 8 / (height * width))
    assert result["eval_range_m"] == [-25.6, -12.8, 25.6, 12.8] and "smaller" in result["eval_range_note"]
    for frame in result["per_frame"]:
        assert all(len(box) == 8 for box in frame["pred"]) and all(len(box) == 7 for box in frame["gt"])
    preds = [np.asarray(f["pred"], dtype=np.float64).reshape(-1, 8) for f in result["per_frame"]]
    recomputed = evaluate(  # anyone can recompute the AP from per_frame
        [(p[:, :7], p[:, 7]) for p in preds],
        [np.asarray(f["gt"], dtype=np.float64).reshape(-1, 7) for f in result["per_frame"]],
        range_m=result["eval_range_m"],
    )
    assert recomputed == result["ap"]


def test_sweep_writes_table_plot_and_baseline_bytes(models: dict[str, Path], tiny_root: Path,
                                                    tmp_path: Path) -> None:
    args = ["eval", "--sweep", str(models["codec"]), str(models["raw"]), str(models["ego"]),
            f"{models['ego']}:late", "--data", str(tiny_root), "--split", "all", "--frames", "2",
            "--out-dir", str(tmp_path), "--no-progress"]
    assert main(args) == 0
    table = (tmp_path / "results.md").read_text()
    assert sum(line.startswith("| ") for line in table.splitlines()) == 5  # header + 4 rows
    assert "late fusion" in table and "K=8" in table
    assert (tmp_path / "rate_accuracy.png").read_bytes()[:4] == b"\x89PNG"
    raw = json.loads((tmp_path / "raw.json").read_text())
    height, width = raw["bev_shape"]
    channels = TINY_MODEL["backbone"]["bev_channels"]
    assert raw["bytes_per_agent_frame"]["packed"] == channels * height * width * 4
    assert json.loads((tmp_path / "ego.json").read_text())["bytes_per_agent_frame"]["entropy"] == 0
    late = json.loads((tmp_path / "ego_late.json").read_text())
    assert late["mode"] == "late"
    sizes = [b for f in late["per_frame"] for b in f["bytes"]["packed"]]
    assert len(sizes) == 4 and all(b % 32 == 0 for b in sizes)  # 32 bytes per box
    tabulated = tmp_path / "tabulated"
    jsons = [str(tmp_path / f"{name}.json") for name in ("codec", "raw", "ego", "ego_late")]
    assert main(["eval", "--tabulate", *jsons, "--out-dir", str(tabulated)]) == 0
    assert (tabulated / "results.md").read_text() == table
