"""Every bundled model in models/ loads, its identity hashes recompute to the stored ones, its
provenance file matches it and names its training config, it is under 20 MB, models/MANIFEST.yaml
lists exactly the bundled models, and the K=64 model evaluates end to end."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from revqom_nodes.data.dairv2x import DairV2XReader
from revqom_nodes.evaluation.errors import EvaluationError
from revqom_nodes.evaluation.runner import SliceLoss, evaluate_model
from revqom_nodes.model_file import load_model, model_identity, read_model_file
from revqom_nodes.scenario.demo import BUNDLED_MODEL
from revqom_nodes.training.config import load_config

ROOT = Path(__file__).resolve().parents[2]
MODELS_DIR = ROOT / "models"
MANIFEST = yaml.safe_load((MODELS_DIR / "MANIFEST.yaml").read_text(encoding="utf-8"))
ROLES = ("default", "baseline", "experiment")
BUNDLED = sorted(MODELS_DIR.glob("*.pt"))
REQUIRED = ("synthetic_k64_ctx_partner_dropout", "synthetic_gpu_k64_ctx", "synthetic_gpu_ego_ctx",
            "synthetic_gpu_raw_ctx", "synthetic_k64", "synthetic_ego", "synthetic_raw")
MAX_BYTES = 20 * 1024 * 1024

torch.set_num_threads(1)


def test_required_models_are_bundled() -> None:
    assert {p.stem for p in BUNDLED} >= set(REQUIRED)


@pytest.mark.parametrize("path", BUNDLED, ids=[p.stem for p in BUNDLED])
def test_bundled_model_identity(path: Path) -> None:
    assert path.stat().st_size < MAX_BYTES
    loaded = load_model(path)  # recomputes the codebook id (codec state) and the model id, or raises
    raw = read_model_file(path)
    assert model_identity(raw["config"], raw["state_dict"]) == raw["model_id"] == loaded.model_id
    provenance = json.loads(path.with_name(f"{path.stem}.provenance.json").read_text())
    assert provenance["model_id"] == loaded.model_id
    assert provenance["codebook_id"] == loaded.codebook_id
    assert provenance["git"]["commit"] and provenance["command"].startswith("revqom train")
    assert f"--config {provenance['config_path']} " in provenance["command"]
    assert load_config(ROOT / provenance["config_path"]).name == path.stem
    if provenance.get("initialised_from"):
        assert (ROOT / provenance["initialised_from"]["path"]).is_file()
    if loaded.codec_state is not None:
        assert loaded.codec_state.codebook_id == loaded.codebook_id
        assert loaded.codec_state.entropy_tables is not None


def test_manifest_lists_every_bundled_model_with_its_config_and_results() -> None:
    assert set(MANIFEST) == {p.stem for p in BUNDLED}
    defaults = [name for name, entry in MANIFEST.items() if entry["role"] == "default"]
    assert defaults == [Path(BUNDLED_MODEL).stem]
    for name, entry in MANIFEST.items():
        assert entry["role"] in ROLES and entry["what"] and entry["results"].startswith("docs/RESULTS.md")
        provenance = json.loads((MODELS_DIR / f"{name}.provenance.json").read_text())
        assert entry["config"] == provenance["config_path"]
        assert (entry["config"].startswith("config/train/experiments/")) == (entry["role"] == "experiment")
        for row in (entry, entry.get("late", entry)):
            assert set(row["ap"]) == {"0.3", "0.5", "0.7"}
            assert set(row["bytes_per_agent_frame"]) == {"packed", "entropy"}


@pytest.mark.skipif(not (MODELS_DIR / "synthetic_k64.pt").is_file(), reason="no bundled K=64 model")
def test_bundled_k64_evaluates_on_generated_frames(tiny_root: Path) -> None:
    loaded = load_model(MODELS_DIR / "synthetic_k64.pt")
    reader = DairV2XReader(tiny_root, "all")
    result = evaluate_model(loaded, [reader[0], reader[1]], name="synthetic_k64", progress=False)
    assert result["frames"] == 2 and result["mode"] == "revqom"
    assert 0 < result["bytes_per_agent_frame"]["entropy"] <= result["bytes_per_agent_frame"]["packed"]
    assert set(result["ap"]) == {"0.3", "0.5", "0.7"}


def test_bundled_default_evaluates_under_slice_loss(tiny_root: Path) -> None:
    """``revqom eval --slice-loss``: no loss equals the lossless evaluation, the draws follow the
    seed, every slice lost leaves the partner out, and bad settings are refused."""
    loaded = load_model(ROOT / BUNDLED_MODEL)
    reader = DairV2XReader(tiny_root, "all")
    frames = [reader[i] for i in range(len(reader))]

    def run(probability: float | None, seed: int = 0, interleave: int = 2) -> dict:
        loss = None if probability is None else SliceLoss(probability, 1100, interleave, seed)
        return evaluate_model(loaded, frames, name="k64", progress=False, slice_loss=loss)

    def preds(result: dict) -> list:
        return [f["pred"] for f in result["per_frame"]]

    lossless, kept = run(None), run(0.0)
    assert "slice_loss" not in lossless
    assert kept["slice_loss"]["mean_cells_received"] == 1.0 and kept["slice_loss"]["partner_maps"] > 0
    for a, b in zip(preds(kept), preds(lossless), strict=True):  # the masked GroupNorm sums differently
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-3)
    half, again, other = run(0.5, seed=1), run(0.5, seed=1), run(0.5, seed=2)
    assert 0.0 < half["slice_loss"]["mean_cells_received"] < 1.0
    assert preds(half) == preds(again) and half["slice_loss"] == again["slice_loss"]
    assert other["slice_loss"]["mean_cells_received"] != half["slice_loss"]["mean_cells_received"]
    lost = run(1.0)
    assert lost["slice_loss"]["mean_cells_received"] == 0.0 and preds(lost) != preds(lossless)
    with pytest.raises(ValueError, match="interleave"):
        run(0.1, interleave=0)
    with pytest.raises(EvaluationError, match="codebook indices"):
        evaluate_model(load_model(MODELS_DIR / "synthetic_gpu_raw_ctx.pt"), frames, name="raw",
                       progress=False, slice_loss=SliceLoss(0.1))


def test_bundled_default_merges_its_ego_detections_when_asked(tiny_root: Path) -> None:
    """``merge_ego_detections``: each frame's boxes are the cooperative ones and the ego-only head's
    on the ego's map alone, merged by NMS (every box from one of the two, the best of both kept)."""
    loaded = load_model(ROOT / BUNDLED_MODEL)
    reader = DairV2XReader(tiny_root, "all")
    frames = [reader[i] for i in range(len(reader))]

    def preds(result: dict) -> list[np.ndarray]:
        return [np.asarray(f["pred"], np.float64).reshape(-1, 8) for f in result["per_frame"]]

    plain = evaluate_model(loaded, frames, name="d", progress=False)
    merged = evaluate_model(loaded, frames, name="d", progress=False, merge_ego_detections=True)
    ego_alone = [replace(f, agents=f.agents[:1]) for f in frames]
    alone = evaluate_model(loaded, ego_alone, name="a", progress=False)
    assert merged["merge_ego_detections"] and not plain["merge_ego_detections"]
    assert not alone["merge_ego_detections"]  # nothing to merge without a partner
    pairs = zip(preds(merged), preds(plain), strict=True)
    assert any(m.shape != p.shape or not np.array_equal(m, p) for m, p in pairs)
    for cooperative, own, both in zip(preds(plain), preds(alone), preds(merged), strict=True):
        pool = np.concatenate([cooperative, own])
        assert all(np.abs(pool - row).max(axis=1).min() <= 1e-4 for row in both)
        assert both[:, 7].max(initial=0.0) == pytest.approx(pool[:, 7].max(initial=0.0), abs=1e-4)
