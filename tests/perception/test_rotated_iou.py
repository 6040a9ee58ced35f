"""Rotated BEV IoU against a shapely oracle and on hand-made cases."""

import math

import numpy as np
import pytest
from shapely.geometry import Polygon

from revqom_nodes.perception.iou import bev_corners, rotated_iou, rotated_iou_aligned


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
