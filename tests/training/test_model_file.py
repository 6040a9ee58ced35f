"""The model file: save / load round trip, identity hashes, and clear errors for bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL

from revqom_nodes.model_file import ModelFileError, load_model, model_identity, save_model
from revqom_nodes.perception.config import DetectorConfig
from revqom_nodes.perception.detector import build_detector

torch.set_num_threads(1)


def _saved(
    tmp_path: Path, name: str = "tiny", **model_overrides: object
) -> tuple[Path, torch.nn.Module, dict]:
    torch.manual_seed(0)
    values = {"model": {**TINY_MODEL, **model_overrides}, "train": {"seed": 0}, "data": {}}
    detector = build_detector(DetectorConfig.from_dict(values["model"]))
    state = None
    if detector.codec is not None:
        codec = detector.config.codec
        count = codec.num_quantizers * codec.codebook_size
        tables = np.arange(1, count + 1).reshape(codec.num_quantizers, -1)
        state = detector.codec.export_state(tables)
    path = tmp_path / f"{name}.pt"
    save_model(path, detector, values, codec_state=state, provenance={"command": "test"})
    return path, detector, values


def test_round_trip_keeps_weights_codec_and_identity(tmp_path: Path) -> None:
    path, detector, values = _saved(tmp_path)
    loaded = load_model(path)
    for key, value in detector.state_dict().items():
        assert torch.equal(loaded.detector.state_dict()[key], value), key
    assert loaded.config == detector.config
    assert loaded.codebook_id == loaded.codec_state.codebook_id and len(loaded.codebook_id) == 64
    assert loaded.model_id == model_identity(values, detector.state_dict())
    assert loaded.provenance == {"command": "test"}
    assert not loaded.detector.training
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "revqom-model" and raw["format_version"] == 1


def test_raw_model_has_no_codec_and_ego_model_runs_late(tmp_path: Path) -> None:
    path, _, _ = _saved(tmp_path, "raw", codec=None)
    loaded = load_model(path)
    assert loaded.codec_state is None and loaded.codebook_id == ""
    ego_path, _, _ = _saved(tmp_path, "ego", codec=None, mode="ego_only")
    late = load_model(ego_path, mode="late")
    assert late.config.mode == "late"
    with pytest.raises(ModelFileError, match="cannot run in mode"):
        load_model(path, mode="late")


def test_missing_truncated_and_foreign_files_raise(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="no such model file"):
        load_model(tmp_path / "absent.pt")
    path, _, _ = _saved(tmp_path)
    data = path.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="cannot read"):
        load_model(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(ModelFileError, match="not a revqom model file"):
        load_model(foreign)


def test_edited_weights_or_codebooks_are_refused(tmp_path: Path) -> None:
    path, _, _ = _saved(tmp_path)
    data = torch.load(path, weights_only=True)
    name = next(k for k in data["state_dict"] if k.endswith("weight"))
    data["state_dict"][name] += 1.0
    torch.save(data, tmp_path / "edited.pt")
    with pytest.raises(ModelFileError, match="model_id mismatch"):
        load_model(tmp_path / "edited.pt")
    data = torch.load(path, weights_only=True)
    data["codec"]["codebooks"] += 1.0
    torch.save(data, tmp_path / "codebooks.pt")
    with pytest.raises(ModelFileError, match="codec state"):
        load_model(tmp_path / "codebooks.pt")
