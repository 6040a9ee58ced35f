"""``train.pose_noise`` and ``train.partner_delay_ms``: the partners' poses of a training sample
carry the transmitted pose's Gaussian error (the error ``revqom eval --pose-noise`` gives), and
its partners' sweeps may be those of the pair k sweeps earlier (as ``revqom eval --delay-ms``
pairs them), reproducibly; the ego's sweep and the ground truth stay."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from revqom_nodes.data.dairv2x import DairV2XReader
from revqom_nodes.data.perturbation import noisy_pose
from revqom_nodes.geometry import invert, make_transform, rotation_z
from revqom_nodes.perception.grid import BevGrid
from revqom_nodes.perception.sample import SceneSample
from revqom_nodes.training.augment import perturb_partner_poses
from revqom_nodes.training.config import TrainConfig
from revqom_nodes.training.dataset import CooperativeDataset
from revqom_nodes.training.errors import TrainingError


def _sample(partners: int) -> SceneSample:
    poses = np.stack([np.eye(4)] + [make_transform(rotation_z(0.3 * a), [10.0 * a, -4.0, 2.0])
                                    for a in range(1, partners + 1)])
    points = [np.full((3, 4), a, np.float32) for a in range(partners + 1)]
    return SceneSample("f", points, poses, np.ones((2, 7)))


def test_partner_errors_have_the_stds_asked_and_the_ego_keeps_its_pose() -> None:
    sample = _sample(2)
    errors = []
    for seed in range(3000):
        noisy = perturb_partner_poses(sample, 0.2, 0.5, np.random.default_rng(seed))
        assert np.array_equal(noisy.T_ego_from_agent[0], np.eye(4))
        assert noisy.points is sample.points and noisy.gt_boxes is sample.gt_boxes
        for a in (1, 2):
            T, N = sample.T_ego_from_agent[a], noisy.T_ego_from_agent[a]
            turn = N[:3, :3] @ T[:3, :3].T  # the error turns about the partner's own origin
            errors.append([*(N[:2, 3] - T[:2, 3]), np.degrees(np.arctan2(turn[1, 0], turn[0, 0]))])
            assert N[2, 3] == T[2, 3] and np.allclose(N[:3, :3] @ N[:3, :3].T, np.eye(3))
    errors = np.array(errors)
    assert np.allclose(errors.std(axis=0), [0.2, 0.2, 0.5], rtol=0.05)
    assert np.allclose(errors.mean(axis=0), 0.0, atol=0.02)


def test_the_draw_is_noisy_pose_of_standard_normals() -> None:
    sample = _sample(1)
    draws = np.random.default_rng(7).standard_normal((1, 3)) * [0.3, 0.3, 1.0]
    noisy = perturb_partner_poses(sample, 0.3, 1.0, np.random.default_rng(7))
    assert np.allclose(noisy.T_ego_from_agent[1], noisy_pose(sample.T_ego_from_agent[1], *draws[0]))


@pytest.mark.parametrize("bad", [[0.2], [-0.1, 0.2], [0.2, float("nan")], "0.2,0.2", [True, 0.2]])
def test_bad_pose_noise_is_refused(bad: object) -> None:
    with pytest.raises(TrainingError, match="pose_noise"):
        TrainConfig(pose_noise=bad)  # type: ignore[arg-type]


def test_a_config_list_becomes_a_tuple_and_zero_is_off() -> None:
    assert TrainConfig(pose_noise=[0.2, 1]).pose_noise == (0.2, 1.0)  # type: ignore[arg-type]
    assert TrainConfig().pose_noise == (0.0, 0.0)


def test_the_dataset_noises_only_the_partners_and_reproducibly(tiny_root: Path) -> None:
    reader = DairV2XReader(tiny_root, "all")
    grid = BevGrid()
    common = {"max_agents": 2, "comm_range_m": 200.0, "augment": None}
    clean = CooperativeDataset(reader, grid, **common)[0]
    noisy = CooperativeDataset(reader, grid, pose_noise=(0.5, 2.0), **common)
    first, again = noisy[0], noisy[0]
    assert np.array_equal(first.T_ego_from_agent, again.T_ego_from_agent)
    assert np.array_equal(first.T_ego_from_agent[0], clean.T_ego_from_agent[0])
    error = first.T_ego_from_agent[1] @ invert(clean.T_ego_from_agent[1])
    assert 1e-3 < np.hypot(*error[:2, 3]) < 5.0
    assert all(np.array_equal(a, b) for a, b in zip(first.points, clean.points, strict=True))
    assert np.array_equal(first.gt_boxes, clean.gt_boxes)
    noisy.set_epoch(1)
    assert not np.array_equal(noisy[0].T_ego_from_agent[1], first.T_ego_from_agent[1])


def test_delayed_partners_come_from_the_pair_sweeps_earlier(tiny_root: Path) -> None:
    reader = DairV2XReader(tiny_root, "all")
    grid = BevGrid()
    common = {"max_agents": 2, "comm_range_m": 200.0, "augment": None}
    plain = CooperativeDataset(reader, grid, **common)
    delayed = CooperativeDataset(reader, grid, partner_delay_ms=100.0, **common)
    assert len(delayed.delayed) == 1 and delayed.delayed[0]  # one sweep back, some frames have a pair
    index, earlier = next(iter(delayed.delayed[0].items()))
    assert earlier != index
    seen = set()
    for epoch in range(16):
        delayed.set_epoch(epoch)
        sample = delayed[index]
        assert np.array_equal(sample.points[0], plain[index].points[0])  # the ego's own sweep
        assert np.array_equal(sample.gt_boxes, plain[index].gt_boxes)  # at the ego's time
        for source in (index, earlier):
            if np.array_equal(sample.points[1], plain[source].points[1]):
                seen.add(source)
    assert seen == {index, earlier}  # k = 0 and k = 1 both drawn
    first = [i for i in range(len(reader)) if i not in delayed.delayed[0]]
    assert first and all(np.array_equal(delayed[i].points[1], plain[i].points[1]) for i in first)


def test_bad_partner_delay_is_refused() -> None:
    with pytest.raises(TrainingError, match="partner_delay_ms"):
        TrainConfig(partner_delay_ms=-100.0)
