"""Rotated BEV IoU against a shapely oracle and on hand-made cases; the torch backend against numpy."""

import math

import numpy as np
import pytest
import torch
from shapely.geometry import Polygon

from revqom_nodes.perception.iou import (
    bev_corners,
    bev_corners_torch,
    rotated_iou,
    rotated_iou_aligned,
    rotated_iou_aligned_torch,
)


def random_boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.column_stack(
        [
            rng.uniform(-3, 3, (n, 2)),
            rng.uniform(-1, 1, n),
            rng.uniform(0.3, 5.0, (n, 3)),
            rng.uniform(-4, 4, n),
        ]
    )


def shapely_iou(a: np.ndarray, b: np.ndarray) -> float:
    pa, pb = Polygon(bev_corners(a[None])[0]), Polygon(bev_corners(b[None])[0])
    return pa.intersection(pb).area / pa.union(pb).area


def test_matches_shapely_on_random_boxes():
    rng = np.random.default_rng(0)
    a, b = random_boxes(rng, 40), random_boxes(rng, 30)
    ours = rotated_iou(a, b)
    oracle = np.array([[shapely_iou(x, y) for y in b] for x in a])
    assert (oracle > 0).mean() > 0.3  # the sample has plenty of overlaps
    np.testing.assert_allclose(ours, oracle, atol=1e-9)
    np.testing.assert_allclose(rotated_iou_aligned(a[:30], b), np.diag(oracle[:30]), atol=1e-9)


def test_hand_made_cases():
    box = np.array([[0.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.3]])
    flipped = box.copy()
    flipped[0, 6] += math.pi
    swapped = np.array([[0.0, 0.0, 0.0, 2.0, 4.0, 1.5, 0.3 + math.pi / 2]])
    crossed = np.array([[0.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.3 + math.pi / 2]])
    touching = np.array([[4.0 * math.cos(0.3), 4.0 * math.sin(0.3), 0.0, 4.0, 2.0, 1.5, 0.3]])
    far = np.array([[50.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0]])
    higher = box.copy()
    higher[0, 2] = 10.0  # BEV IoU ignores z
    iou = rotated_iou(box, np.concatenate([box, flipped, swapped, crossed, touching, far, higher]))[0]
    np.testing.assert_allclose(iou, [1.0, 1.0, 1.0, 4.0 / 12.0, 0.0, 0.0, 1.0], atol=1e-9)


def test_shifted_half_overlap():
    a = np.array([[0.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0]])
    b = np.array([[2.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0]])
    assert rotated_iou(a, b)[0, 0] == pytest.approx(4.0 / 12.0)


def test_empty_inputs_give_empty_matrices():
    assert rotated_iou(np.zeros((0, 7)), np.zeros((3, 7))).shape == (0, 3)
    assert rotated_iou(np.zeros((2, 7)), np.zeros((0, 7))).shape == (2, 0)


def torch_pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    rows, cols = np.meshgrid(np.arange(len(a)), np.arange(len(b)), indexing="ij")
    iou = rotated_iou_aligned_torch(torch.from_numpy(a[rows.ravel()]), torch.from_numpy(b[cols.ravel()]))
    assert iou.dtype == torch.float64
    return iou.numpy().reshape(len(a), len(b))


def test_torch_corners_are_the_numpy_corners():
    boxes = random_boxes(np.random.default_rng(3), 50)
    x, y = bev_corners_torch(torch.from_numpy(boxes))
    corners = np.stack([x.numpy(), y.numpy()], axis=-1)
    np.testing.assert_allclose(corners, bev_corners(boxes), rtol=0, atol=1e-12)


def test_torch_matches_numpy_on_random_boxes():
    rng = np.random.default_rng(1)
    a, b = random_boxes(rng, 60), random_boxes(rng, 50)
    np.testing.assert_allclose(torch_pairwise(a, b), rotated_iou(a, b), rtol=0, atol=1e-12)
    single = rotated_iou_aligned_torch(torch.from_numpy(a[:50]).float(), torch.from_numpy(b))  # float32 in
    np.testing.assert_allclose(single.numpy(), rotated_iou_aligned(a[:50].astype(np.float32), b), atol=1e-12)


def test_torch_matches_numpy_on_degenerate_cases():
    box = np.array([[0.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.3]])
    turn = np.array([0, 0, 0, 0, 0, 0, 1.0])  # a yaw step
    cases = {
        "identical": box,
        "yaw + pi": box + math.pi * turn,
        "yaw + 2 pi": box + 2 * math.pi * turn,
        "yaw - 2 pi": box - 2 * math.pi * turn,
        "l, w swapped, quarter turn": np.array([[0.0, 0.0, 0.0, 2.0, 4.0, 1.5, 0.3 + math.pi / 2]]),
        "crossed": box + math.pi / 2 * turn,
        "touching side": np.array([[4.0 * math.cos(0.3), 4.0 * math.sin(0.3), 0.0, 4.0, 2.0, 1.5, 0.3]]),
        "touching corner": np.array([[4.0 * math.cos(0.3) - 2.0 * math.sin(0.3),
                                      4.0 * math.sin(0.3) + 2.0 * math.cos(0.3), 0.0, 4.0, 2.0, 1.5, 0.3]]),
        "contained": np.array([[0.3, 0.1, 0.0, 2.0, 1.0, 1.5, 0.3]]),
        "contained, turned": np.array([[0.2, 0.0, 0.0, 1.5, 1.0, 1.5, 1.1]]),
        "shared edge inside": np.array([[0.5 * math.cos(0.3), 0.5 * math.sin(0.3), 0.0, 3.0, 2.0, 1.5, 0.3]]),
        "far": np.array([[50.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0]]),
        "aligned bounds overlap only": np.array([[3.2, 2.4, 0.0, 4.0, 0.2, 1.5, -0.3]]),
        "yaw near pi and near -pi": np.array([[0.0, 0.0, 0.0, 4.0, 2.0, 1.5, math.pi - 1e-12]]),
    }
    for name, other in cases.items():
        for a, b in ((box, other), (other, box)):
            if name == "yaw near pi and near -pi":
                a = a.copy()
                a[0, 6] = -math.pi + 1e-12
            ours = torch_pairwise(a, b)[0, 0]
            assert ours == pytest.approx(rotated_iou(a, b)[0, 0], abs=1e-12), name
    assert torch_pairwise(box, cases["contained"])[0, 0] == pytest.approx(2.0 / 8.0, abs=1e-12)
    assert torch_pairwise(box, cases["touching side"])[0, 0] == pytest.approx(0.0, abs=1e-12)
    assert torch_pairwise(box, cases["yaw + 2 pi"])[0, 0] == pytest.approx(1.0, abs=1e-12)


def test_torch_empty_input():
    assert rotated_iou_aligned_torch(torch.zeros(0, 7), torch.zeros(0, 7)).shape == (0,)
