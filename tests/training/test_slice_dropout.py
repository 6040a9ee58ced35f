"""Slice dropout: the validity masks it draws, their reproducibility, and that they reach the fusion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL, write_config

from revqom_nodes.data.dairv2x import DairV2XReader
from revqom_nodes.perception.config import DetectorConfig
from revqom_nodes.perception.detector import build_detector, make_frame_input
from revqom_nodes.perception.sample import batch_inputs
from revqom_nodes.training.augment import draw_slice_valid
from revqom_nodes.training.config import SliceDropoutConfig, TrainingError, load_config
from revqom_nodes.training.dataset import CooperativeDataset


def test_ego_is_whole_and_others_lose_whole_runs() -> None:
    config = SliceDropoutConfig(max_drop_probability=1.0, cells_per_slice=7)
    rng = np.random.default_rng(0)
    lost_any = False
    for _ in range(20):
        valid = draw_slice_valid(3, (5, 9), config, rng)
        assert valid.shape == (3, 5, 9) and valid.dtype == bool
        assert valid[0].all()
        for agent in valid[1:]:
            runs = agent.reshape(-1)
            for start in range(0, runs.size, 7):
                run = runs[start : start + 7]
                assert run.all() or not run.any()  # a slice arrives whole or not at all
            lost_any |= not runs.all()
    assert lost_any


def test_drop_share_follows_the_maximum() -> None:
    rng = np.random.default_rng(1)
    config = SliceDropoutConfig(max_drop_probability=0.6, cells_per_slice=4)
    kept = np.mean([draw_slice_valid(2, (40, 40), config, rng)[1].mean() for _ in range(400)])
    assert kept == pytest.approx(1.0 - 0.3, abs=0.03)  # p uniform in [0, 0.6]: mean loss 0.3
    none = SliceDropoutConfig(max_drop_probability=0.0, cells_per_slice=4)
    assert draw_slice_valid(2, (8, 8), none, rng).all()


@pytest.mark.parametrize("values", [{"max_drop_probability": 1.5}, {"cells_per_slice": 0}])
def test_bad_settings_are_refused(values: dict) -> None:
    with pytest.raises(TrainingError):
        SliceDropoutConfig(**values)


def test_config_key_is_read_and_checked(tiny_root: Path, tmp_path: Path) -> None:
    path = write_config(tmp_path / "drop.yaml", tiny_root,
                        train={"slice_dropout": {"max_drop_probability": 0.4, "cells_per_slice": 64}})
    assert load_config(path).train.slice_dropout == SliceDropoutConfig(0.4, 64)
    bad = write_config(tmp_path / "bad.yaml", tiny_root, train={"slice_dropout": {"cells": 3}})
    with pytest.raises(TrainingError, match="slice_dropout"):
        load_config(bad)


def test_dataset_masks_are_reproducible_and_reach_the_fusion(tiny_root: Path) -> None:
    model = DetectorConfig.from_dict(TINY_MODEL)
    dropout = SliceDropoutConfig(max_drop_probability=1.0, cells_per_slice=16)
    dataset = CooperativeDataset(DairV2XReader(tiny_root, "all"), model.grid, max_agents=2,
                                 comm_range_m=100.0, augment=None, seed=5, slice_dropout=dropout)
    samples = [dataset[i] for i in range(len(dataset))]
    assert all(s.valid is not None and s.valid.shape == (2, *model.grid.bev_shape) for s in samples)
    np.testing.assert_array_equal(dataset[1].valid, samples[1].valid)
    partial = [i for i, s in enumerate(samples) if 0.0 < s.valid[1].mean() < 1.0]
    assert partial  # with p drawn in [0, 1], some frames lose some slices
    dataset.set_epoch(1)
    assert not np.array_equal(dataset[partial[0]].valid, samples[partial[0]].valid)

    torch.manual_seed(0)
    detector = build_detector(model).eval()
    none_lost = np.ones((2, *model.grid.bev_shape), bool)
    all_lost = none_lost.copy()
    all_lost[1] = False

    def logits(sample, valid=None, agents=2):
        frame = make_frame_input(sample.points[:agents], sample.T_ego_from_agent[:agents], valid)
        with torch.no_grad():
            return detector([frame]).head.class_logits

    # The tiny grid (+-25.6 m) does not reach the pole 32-80 m away: move the partner next to the
    # ego so that its map overlaps the ego grid (this test is about the masks, not the geometry).
    sample = samples[partial[0]]
    poses = sample.T_ego_from_agent.copy()
    poses[1, :2, 3] = [6.0, 2.0]
    sample = sample._replace(T_ego_from_agent=poses)
    assert not torch.equal(logits(sample), logits(sample, agents=1))
    inputs, _ = batch_inputs([sample])
    assert inputs[0].valid is not None and torch.equal(inputs[0].valid, torch.from_numpy(sample.valid))
    torch.testing.assert_close(logits(sample, all_lost), logits(sample, agents=1))  # lost every slice: absent
    torch.testing.assert_close(logits(sample, none_lost), logits(sample))  # lost none: whole
    assert not torch.equal(logits(sample, sample.valid), logits(sample))  # its own losses change the fusion
