"""Partner dropout (train.partner_dropout): samples that keep the ego alone, reproducibly, and a
training run on a mix of such samples and cooperative ones."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_MODEL, write_config

from revqom_nodes.data.dairv2x import DairV2XReader
from revqom_nodes.perception.config import DetectorConfig
from revqom_nodes.training.config import TrainingError, load_config
from revqom_nodes.training.dataset import CooperativeDataset
from revqom_nodes.training.train import LOG_NAME, train, with_max_iters

REPO = Path(__file__).resolve().parents[2]


def _dataset(root: Path, partner_dropout: float, seed: int = 0) -> CooperativeDataset:
    grid = DetectorConfig.from_dict(TINY_MODEL).grid
    return CooperativeDataset(DairV2XReader(root, "all"), grid, max_agents=2, comm_range_m=100.0,
                              augment=None, seed=seed, partner_dropout=partner_dropout)


def test_config_key_is_read_and_checked(tiny_root: Path, tmp_path: Path) -> None:
    assert load_config(write_config(tmp_path / "p.yaml", tiny_root, train={"partner_dropout": 0.3})
                       ).train.partner_dropout == 0.3
    assert load_config(write_config(tmp_path / "none.yaml", tiny_root)).train.partner_dropout == 0.0
    for bad in (1.5, -0.1, True):
        with pytest.raises(TrainingError, match="partner_dropout"):
            load_config(write_config(tmp_path / "bad.yaml", tiny_root, train={"partner_dropout": bad}))


def test_dropped_samples_keep_the_ego_alone_reproducibly(tiny_root: Path) -> None:
    never, always = _dataset(tiny_root, 0.0), _dataset(tiny_root, 1.0)
    for index in range(len(never)):
        whole, alone = never[index], always[index]
        assert len(whole.points) == 2 and len(alone.points) == 1 and alone.T_ego_from_agent.shape == (1, 4, 4)
        np.testing.assert_array_equal(alone.points[0], whole.points[0])
        np.testing.assert_array_equal(alone.gt_boxes, whole.gt_boxes)  # the ego still learns every box
    half = _dataset(tiny_root, 0.5, seed=1)
    counts = []
    for epoch in range(6):
        half.set_epoch(epoch)
        counts.append([len(half[i].points) for i in range(len(half))])
    assert {n for epoch in counts for n in epoch} == {1, 2}  # both kinds over 24 draws at p = 0.5
    half.set_epoch(3)
    assert [len(half[i].points) for i in range(len(half))] == counts[3]  # the same draw again


def test_training_runs_on_a_mix_of_alone_and_cooperative_samples(tiny_root: Path, tmp_path: Path) -> None:
    config = with_max_iters(load_config(write_config(tmp_path / "mix.yaml", tiny_root,
                                                     train={"partner_dropout": 0.5})), 3)
    dataset = _dataset(tiny_root, config.train.partner_dropout, seed=config.train.seed)
    assert {len(dataset[i].points) for i in range(len(dataset))} == {1, 2}  # the first epoch mixes both
    result = train(config, dataset, tmp_path / "run", progress=False)
    lines = [json.loads(line) for line in (tmp_path / "run" / LOG_NAME).read_text().splitlines()]
    assert result.steps == 3 and all(np.isfinite(line["total"]) for line in lines)


def test_the_experiment_fine_tunes_the_default_with_partner_dropout() -> None:
    config = load_config(REPO / "config/train/experiments/synthetic_gpu_k64_ctx_pdrop.yaml")
    default = load_config(REPO / "config/train/synthetic_gpu_k64_ctx.yaml")
    assert config.model == default.model  # same architecture: the default's weights all load
    assert config.train.init_from == "models/synthetic_gpu_k64_ctx.pt"
    assert 0.0 < config.train.partner_dropout < 1.0
