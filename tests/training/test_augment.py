"""The scene augmentation keeps every agent's points, poses and the ground truth consistent."""

from __future__ import annotations

import numpy as np
import pytest

from revqom_nodes.geometry import count_points_in_boxes, make_transform, rotation_z, transform_points
from revqom_nodes.perception.sample import SceneSample
from revqom_nodes.training.augment import SceneTransform, apply_transform, draw_transform
from revqom_nodes.training.config import AugmentConfig


def _sample(rng: np.random.Generator) -> SceneSample:
    boxes = np.column_stack([rng.uniform(-20, 20, (6, 2)), rng.uniform(-1.5, -0.5, 6),
                             np.tile([4.5, 2.0, 1.6], (6, 1)), rng.uniform(-np.pi, np.pi, 6)])
    T_ego_from_infra = make_transform(rotation_z(1.1), [15.0, -8.0, 4.0])
    inside = boxes[:, :3] + rng.uniform(-0.5, 0.5, (6, 3))  # one point inside each box, ego frame
    clouds = [inside, transform_points(np.linalg.inv(T_ego_from_infra), inside)]
    points = [np.column_stack([c, np.ones(len(c))]).astype(np.float32) for c in clouds]
    return SceneSample("f", points, np.stack([np.eye(4), T_ego_from_infra]), boxes)


def _scene_points(sample: SceneSample) -> list[np.ndarray]:
    """Every agent's points in the ego frame."""
    pairs = zip(sample.points, sample.T_ego_from_agent, strict=True)
    return [transform_points(T, p[:, :3].astype(np.float64)) for p, T in pairs]


@pytest.mark.parametrize(
    "transform",
    [SceneTransform(True, 0.0, 1.0), SceneTransform(False, 0.6, 1.0), SceneTransform(False, 0.0, 1.04),
     SceneTransform(True, -0.7, 0.96)],
)
def test_agents_agree_and_boxes_keep_their_points(transform: SceneTransform) -> None:
    sample = _sample(np.random.default_rng(0))
    out = apply_transform(sample, transform)
    ego_view, infra_view = _scene_points(out)
    np.testing.assert_allclose(ego_view, infra_view, atol=1e-4)  # the same scene points from both agents
    np.testing.assert_allclose(out.T_ego_from_agent[0], np.eye(4), atol=1e-12)
    rotations = out.T_ego_from_agent[:, :3, :3]
    np.testing.assert_allclose(np.linalg.det(rotations), 1.0, atol=1e-9)  # proper rigid frames
    counts = count_points_in_boxes(ego_view, out.gt_boxes)
    assert (counts == 1).all()
    mirror = np.diag([1.0, -1.0 if transform.mirror else 1.0, 1.0])
    R = rotation_z(transform.yaw_rad)
    expected = transform.scale * (_scene_points(sample)[0] @ (R @ mirror).T)
    np.testing.assert_allclose(ego_view, expected, atol=1e-4)


def test_disabled_augmentation_is_the_identity() -> None:
    config = AugmentConfig(flip_probability=0.0, rotation_deg=0.0, scale_range=(1.0, 1.0))
    sample = _sample(np.random.default_rng(1))
    out = apply_transform(sample, draw_transform(config, np.random.default_rng(2)))
    for a, b in zip(out.points, sample.points, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(out.T_ego_from_agent, sample.T_ego_from_agent)
    np.testing.assert_allclose(out.gt_boxes, sample.gt_boxes)
