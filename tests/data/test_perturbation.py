"""Pose noise on the partners' transmitted poses: the pose change, the draw, the replay's keying."""

from __future__ import annotations

import numpy as np

from revqom_nodes.data.perturbation import PartnerPoseNoise, noisy_pose, pose_errors
from revqom_nodes.geometry import make_transform, rotation_z


def test_noisy_pose_moves_and_turns_about_the_lidar() -> None:
    T = make_transform(rotation_z(0.7), [1000.0, -2000.0, 5.0])
    assert np.array_equal(noisy_pose(T, 0.0, 0.0, 0.0), T)
    moved = noisy_pose(T, 0.3, -0.2, 2.0)
    np.testing.assert_allclose(moved[:3, 3], T[:3, 3] + [0.3, -0.2, 0.0])
    np.testing.assert_allclose(moved[:3, :3], rotation_z(0.7 + np.radians(2.0)))


def test_pose_errors_depend_on_seed_and_frame_and_scale_with_the_stds() -> None:
    errors = pose_errors(3, 5, 2, 0.4, 0.2)
    assert errors.shape == (2, 3)
    np.testing.assert_array_equal(errors, pose_errors(3, 5, 2, 0.4, 0.2))
    np.testing.assert_allclose(pose_errors(3, 5, 2, 0.8, 0.4), 2 * errors)
    assert not np.allclose(pose_errors(3, 6, 2, 0.4, 0.2), errors)
    assert not np.allclose(pose_errors(4, 5, 2, 0.4, 0.2), errors)
    np.testing.assert_array_equal(pose_errors(3, 5, 2, 0.0, 0.0), np.zeros((2, 3)))


def test_replay_noise_keys_each_partner_sweep_on_its_frame_and_row() -> None:
    frames = [
        [("vehicle", 1_000), ("vehicle_1", 1_010), ("infrastructure", 970)],
        [("vehicle", 1_100), ("vehicle_1", 1_110), ("infrastructure", 970)],  # the same roadside sweep again
        [("vehicle", 1_200), ("infrastructure", 1_170)],  # vehicle_1 out of this frame
    ]
    noise = PartnerPoseNoise(frames, xy_m=0.4, yaw_deg=0.4, noise_seed=9)
    T = make_transform(rotation_z(0.3), [10.0, 20.0, 1.0])
    for agent_id, stamp_us, frame, row, partners in [
        ("vehicle_1", 1_010, 0, 0, 2), ("infrastructure", 970, 0, 1, 2), ("vehicle_1", 1_110, 1, 0, 2),
        ("infrastructure", 1_170, 2, 0, 1),
    ]:
        expected = noisy_pose(T, *pose_errors(9, frame, partners, 0.4, 0.4)[row])
        np.testing.assert_array_equal(noise.pose(agent_id, stamp_us * 1000, T), expected)
    np.testing.assert_array_equal(noise.pose("vehicle", 1_000_000, T), T)  # the ego's pose stays exact
    np.testing.assert_array_equal(noise.pose("vehicle_1", 1_050_000, T), T)  # a sweep no frame lists
