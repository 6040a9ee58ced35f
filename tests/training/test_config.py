"""Layered training configs: base + override resolved once, unknown keys an error, round trip."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from revqom_nodes.training.config import config_from_dict, load_config, merge
from revqom_nodes.training.errors import TrainingError

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config" / "train"
REPO_CONFIGS = sorted([*CONFIG_DIR.glob("*.yaml"), *CONFIG_DIR.glob("experiments/*.yaml")])
MAX_FILES = 2  # a config resolves from at most one base file plus itself


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_merge_is_deep_and_null_replaces() -> None:
    base = {"model": {"codec": {"codebook_size": 64, "num_quantizers": 3}, "mode": "cooperative"}}
    assert merge(base, {"model": {"codec": {"codebook_size": 4}}})["model"]["codec"] == {
        "codebook_size": 4, "num_quantizers": 3,
    }
    assert merge(base, {"model": {"codec": None}})["model"]["codec"] is None


def test_override_file_changes_only_its_keys(tmp_path: Path) -> None:
    _write(tmp_path / "base.yaml", "model:\n  codec: {channels: 64, codebook_size: 64}\ntrain: {epochs: 3}\n")
    override = "base: base.yaml\nmodel:\n  codec: {codebook_size: 16}\n"
    child = load_config(_write(tmp_path / "k16.yaml", override))
    assert child.name == "k16"
    assert child.model.codec.codebook_size == 16 and child.model.codec.channels == 64
    assert child.train.epochs == 3
    again = config_from_dict(child.values, "again")
    assert again.values == child.values and again.model == child.model and again.train == child.train


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("modle: {}\n", "unknown"),
        ("train: {epochz: 3}\n", "unknown train keys"),
        ("train: {augment: {flip: 0.5}}\n", "unknown train.augment keys"),
        ("model: {grid: {cell: 1}}\n", "unknown grid keys"),
        ("train: {batch_size: 0}\n", "batch_size"),
        ("- a list\n", "mapping"),
    ],
)
def test_bad_files_raise_clear_errors(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(TrainingError, match=match):
        load_config(_write(tmp_path / "bad.yaml", text))


def test_base_cycle_is_refused(tmp_path: Path) -> None:
    _write(tmp_path / "a.yaml", "base: b.yaml\n")
    _write(tmp_path / "b.yaml", "base: a.yaml\n")
    with pytest.raises(TrainingError, match="levels of 'base'"):
        load_config(tmp_path / "a.yaml")


@pytest.mark.parametrize("path", REPO_CONFIGS, ids=[p.stem for p in REPO_CONFIGS])
def test_repository_configs_resolve(path: Path) -> None:
    config = load_config(path)
    assert config.data.root
    match = re.fullmatch(r"synthetic_k(\d+)(_\w+)?", path.stem)
    if match:
        assert config.model.codec.codebook_size == int(match.group(1))
        assert config.model.codec.num_quantizers == 3
    if path.stem in ("synthetic_raw", "synthetic_ego"):
        assert config.model.codec is None


@pytest.mark.parametrize("path", REPO_CONFIGS, ids=[p.stem for p in REPO_CONFIGS])
def test_repository_configs_are_at_most_a_base_and_an_override(path: Path) -> None:
    files = [path]
    while (base := yaml.safe_load(files[-1].read_text(encoding="utf-8")).get("base")) is not None:
        files.append(files[-1].parent / base)
    assert len(files) <= MAX_FILES, f"{path.name}: {' -> '.join(f.name for f in files)}"
