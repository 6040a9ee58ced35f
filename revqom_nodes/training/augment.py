"""Global scene augmentation that keeps every agent's geometry consistent.

A cooperative sample holds each agent's points in its own LiDAR frame, the poses
``T_ego_from_agent`` (entry 0 the identity) and the ground truth in the ego frame. The
augmentation moves the whole scene as seen from the ego: a mirror ``y -> -y``, a yaw
rotation about the ego origin and a uniform scale, applied in that order. Each agent's
points stay in a proper (right-handed, rigid) frame of its own:

- mirror (F = diag(1, -1, 1)): every agent mirrors its own y, ``T' = F T F`` (still a
  rotation), boxes get ``y -> -y, yaw -> -yaw``;
- rotation R about the ego z: the ego's points are rotated, ``T' = R T`` for the others,
  boxes are rotated;
- scale s: every agent's xyz are scaled by s in its own frame, every pose's translation is
  scaled by s, boxes' centres and sizes are scaled by s.

Then ``T'_a p'_a`` equals the augmented scene point for every agent, so the warp aligns the
maps exactly as it does without augmentation (tested).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from revqom_nodes.data.perturbation import noisy_pose
from revqom_nodes.geometry import make_transform, rotation_z, transform_boxes, wrap_angle
from revqom_nodes.perception.sample import SceneSample
from revqom_nodes.training.config import AugmentConfig, SliceDropoutConfig

_MIRROR = np.diag([1.0, -1.0, 1.0, 1.0])


class SceneTransform(NamedTuple):
    """One draw of the augmentation."""

    mirror: bool
    yaw_rad: float
    scale: float


def draw_transform(config: AugmentConfig, rng: np.random.Generator) -> SceneTransform:
    """Random mirror, yaw and scale from ``config``."""
    mirror = bool(rng.random() < config.flip_probability)
    yaw = float(np.radians(rng.uniform(-config.rotation_deg, config.rotation_deg)))
    scale = float(rng.uniform(*config.scale_range))
    return SceneTransform(mirror, yaw, scale)


def apply_transform(sample: SceneSample, transform: SceneTransform) -> SceneSample:
    """The sample seen through ``transform`` (module docstring); inputs are not modified."""
    points = [p.copy() for p in sample.points]
    poses = sample.T_ego_from_agent.copy()
    boxes = np.asarray(sample.gt_boxes, dtype=np.float64).reshape(-1, 7).copy()
    if transform.mirror:
        for cloud in points:
            cloud[:, 1] *= -1.0
        poses = _MIRROR @ poses @ _MIRROR
        boxes[:, 1] *= -1.0
        boxes[:, 6] = wrap_angle(-boxes[:, 6])
    if transform.yaw_rad:
        R = make_transform(rotation_z(transform.yaw_rad), np.zeros(3))
        points[0][:, :3] = (points[0][:, :3].astype(np.float64) @ R[:3, :3].T).astype(np.float32)
        poses[1:] = R @ poses[1:]
        boxes = transform_boxes(R, boxes)
    if transform.scale != 1.0:
        for cloud in points:
            cloud[:, :3] *= np.float32(transform.scale)
        poses[:, :3, 3] *= transform.scale
        boxes[:, :6] *= transform.scale
    return SceneSample(sample.frame_id, points, poses, boxes)


def draw_slice_valid(
    num_agents: int, bev_shape: tuple[int, int], config: SliceDropoutConfig, rng: np.random.Generator
) -> np.ndarray:
    """Per-cell validity (A, H, W) bool of a lossy link (``SliceDropoutConfig``): the ego's map
    (entry 0) is whole; every other agent loses whole row-major runs of cells."""
    height, width = bev_shape
    cells = height * width
    num_slices = -(-cells // config.cells_per_slice)
    valid = np.ones((num_agents, cells), dtype=bool)
    for agent in range(1, num_agents):
        drop_probability = rng.uniform(0.0, config.max_drop_probability)
        lost = rng.random(num_slices) < drop_probability
        valid[agent] = np.repeat(~lost, config.cells_per_slice)[:cells]
    return valid.reshape(num_agents, height, width)


def perturb_partner_poses(
    sample: SceneSample, xy_m: float, yaw_deg: float, rng: np.random.Generator
) -> SceneSample:
    """``sample`` with each partner's T_ego_from_agent as its transmitted pose would be: off by
    Gaussian errors, std ``xy_m`` on x and y and ``yaw_deg`` on the yaw about its own origin
    (``data.perturbation.noisy_pose``, the error ``revqom eval --pose-noise`` and the replay
    give the pose in the world: its x, y std is the same in the ego frame). The clouds and the
    ground truth stay: the model learns to fuse maps that land slightly off."""
    errors = rng.standard_normal((len(sample.points) - 1, 3)) * np.array([xy_m, xy_m, yaw_deg])
    T = sample.T_ego_from_agent.copy()
    for a, (dx, dy, dyaw) in enumerate(errors, start=1):
        T[a] = noisy_pose(T[a], dx, dy, dyaw)
    return sample._replace(T_ego_from_agent=T)
