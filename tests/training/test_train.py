"""Training on a tiny config: the loss falls, the log has every term, a resume reproduces the run,
a codec model starts from a raw-fusion model's weights."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from conftest import TINY_MODEL, write_config

from revqom_nodes.data.dairv2x import DairV2XReader
from revqom_nodes.model_file import save_model
from revqom_nodes.perception.config import DetectorConfig
from revqom_nodes.perception.detector import build_detector
from revqom_nodes.training.config import load_config
from revqom_nodes.training.dataset import CooperativeDataset
from revqom_nodes.training.train import (
    CHECKPOINT_NAME,
    LOG_NAME,
    TrainResult,
    initialise_from,
    train,
    with_max_iters,
)


def _train(config_path: Path, out: Path, steps: int, *, augment: bool = True, resume: bool = False,
           stop_at: int | None = None) -> TrainResult:
    config = with_max_iters(load_config(config_path), steps)
    dataset = CooperativeDataset(
        DairV2XReader(config.data.root, config.data.split), config.model.grid,
        max_agents=config.train.max_agents, comm_range_m=config.train.comm_range_m,
        augment=config.train.augment if augment else None, seed=config.train.seed,
    )
    return train(config, dataset, out, resume=resume, progress=False, stop_at=stop_at)


def test_loss_falls_and_log_has_every_term(tiny_config: Path, tmp_path: Path) -> None:
    result = _train(tiny_config, tmp_path / "run", 12, augment=False)
    lines = [json.loads(line) for line in (tmp_path / "run" / LOG_NAME).read_text().splitlines()]
    assert [line["step"] for line in lines] == list(range(1, 13))
    for key in ("total", "classification", "regression", "direction", "commitment", "orthogonal", "lr"):
        assert all(key in line for line in lines), key
    assert all(len(line["perplexity"]) == 2 for line in lines)  # one per stage (n_q = 2)
    first = sum(line["total"] for line in lines[:3]) / 3
    last = sum(line["total"] for line in lines[-3:]) / 3
    assert last < 0.8 * first, (first, last)
    assert result.steps == result.total_steps == 12
    assert (tmp_path / "run" / CHECKPOINT_NAME).is_file()


def test_resume_continues_to_the_same_state(tiny_config: Path, tmp_path: Path) -> None:
    straight = _train(tiny_config, tmp_path / "straight", 4)
    stopped = _train(tiny_config, tmp_path / "split", 4, stop_at=2)
    assert stopped.steps == 2 and stopped.total_steps == 4
    resumed = _train(tiny_config, tmp_path / "split", 4, resume=True)
    assert resumed.steps == 4
    for key, value in straight.detector.state_dict().items():
        assert torch.equal(resumed.detector.state_dict()[key], value), key
    a = torch.load(tmp_path / "straight" / CHECKPOINT_NAME, weights_only=True)
    b = torch.load(tmp_path / "split" / CHECKPOINT_NAME, weights_only=True)
    assert a["step"] == b["step"] == 4
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"]
    for slot, state in a["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, b["optimizer"]["state"][slot][name]), (slot, name)


def test_resume_refuses_another_config(tiny_config: Path, tmp_path: Path, tiny_root: Path) -> None:
    _train(tiny_config, tmp_path / "run", 2)
    other = write_config(tmp_path / "other.yaml", tiny_root, train={"lr": 0.5})
    try:
        _train(other, tmp_path / "run", 2, resume=True)
    except ValueError as exc:
        assert "another config" in str(exc)
    else:
        raise AssertionError("resuming with another config must fail")


def test_init_from_copies_the_matching_weights(tmp_path: Path) -> None:
    torch.manual_seed(0)
    raw_model = {**TINY_MODEL, "codec": None}
    raw = build_detector(DetectorConfig.from_dict(raw_model))
    save_model(tmp_path / "raw.pt", raw, {"model": raw_model})
    torch.manual_seed(1)
    coded = build_detector(DetectorConfig.from_dict(TINY_MODEL))
    fresh_codebooks = coded.codec.quantizer.codebooks.clone()
    initialise_from(coded, str(tmp_path / "raw.pt"))
    for key, value in raw.state_dict().items():
        assert torch.equal(coded.state_dict()[key], value), key
    assert torch.equal(coded.codec.quantizer.codebooks, fresh_codebooks)  # the codec keeps its own start
