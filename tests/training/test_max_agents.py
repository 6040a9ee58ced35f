"""``train.max_agents`` on many-agent data: each sample keeps the ego and a random subset of the
partners in range, reproducibly; a 1 + 1 frame is kept whole; a few training steps run."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_SENSORS, write_config

from revqom_nodes.data.dairv2x import DairV2XReader
from revqom_nodes.data.synthetic import generate_dataset
from revqom_nodes.perception.sample import SceneSample
from revqom_nodes.training.config import load_config
from revqom_nodes.training.dataset import CooperativeDataset, choose_partners
from revqom_nodes.training.train import train, with_max_iters


def _sample(partners: int) -> SceneSample:
    poses = np.stack([np.eye(4)] * (partners + 1))
    poses[:, 0, 3] = np.arange(partners + 1)  # agent i sits i metres ahead: its pose names it
    points = [np.full((3, 4), i, np.float32) for i in range(partners + 1)]
    return SceneSample("f", points, poses, np.zeros((0, 7)))


def test_a_random_subset_of_at_most_max_agents_minus_one_partners() -> None:
    rng = np.random.default_rng(0)
    counts, seen = set(), set()
    for _ in range(200):
        chosen = choose_partners(_sample(4), 3, rng)
        kept = [int(p[0, 0]) for p in chosen.points]
        assert kept[0] == 0 and kept == sorted(kept)  # the ego first, the partners in their order
        assert list(chosen.T_ego_from_agent[:, 0, 3]) == kept  # poses follow their clouds
        counts.add(len(kept) - 1)
        seen.update(kept[1:])
    assert counts == {1, 2} and seen == {1, 2, 3, 4}
    assert [len(choose_partners(_sample(2), 8, rng).points) - 1 for _ in range(50)].count(1) > 0


@pytest.mark.parametrize(("partners", "max_agents", "kept"), [(1, 2, 2), (0, 2, 1), (1, 1, 1), (3, 1, 1)])
def test_nothing_is_drawn_with_one_partner_and_max_agents_one_keeps_the_ego(
    partners: int, max_agents: int, kept: int
) -> None:
    sample = _sample(partners)
    chosen = choose_partners(sample, max_agents, np.random.default_rng(0))
    assert len(chosen.points) == kept
    if kept == partners + 1:
        assert chosen is sample  # the 1 + 1 case is the frame's sample itself


@pytest.fixture(scope="module")
def many_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 frames, 2 vehicles + 2 roadside units, sparse sensors."""
    root = tmp_path_factory.mktemp("many") / "dair"
    generate_dataset(root, 4, 11, scenes=1, config=replace(TINY_SENSORS, vehicles=2, rsus=2), progress=False)
    return root


def test_training_draws_partners_per_sample_and_epoch_and_runs(many_root: Path, tmp_path: Path) -> None:
    config = with_max_iters(load_config(write_config(tmp_path / "c.yaml", many_root,
                                                     train={"max_agents": 3})), 3)
    dataset = CooperativeDataset(
        DairV2XReader(many_root, "all"), config.model.grid, max_agents=config.train.max_agents,
        comm_range_m=config.train.comm_range_m, augment=None, seed=config.train.seed,
    )
    draws = []
    for epoch in range(4):
        dataset.set_epoch(epoch)
        draws.append([len(dataset[i].points) for i in range(len(dataset))])
    assert {n for row in draws for n in row} <= {2, 3} and len({tuple(row) for row in draws}) > 1
    dataset.set_epoch(1)
    assert [len(dataset[i].points) for i in range(len(dataset))] == draws[1]  # reproducible
    result = train(config, dataset, tmp_path / "run", progress=False)
    assert result.steps == 3
