"""Rotated NMS: duplicates go, distinct boxes stay, order by score; the same boxes as the
numpy reference on candidate sets recorded from the bundled models, on random clusters and chains."""

from pathlib import Path

import numpy as np
import pytest
import torch

from revqom_nodes.perception.errors import PerceptionError
from revqom_nodes.perception.nms import _overlapping_pairs, rotated_nms, rotated_nms_numpy

FIXTURE = Path(__file__).parent / "fixtures" / "nms_candidates.npz"


def recorded_sets() -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    data = np.load(FIXTURE)
    names = sorted({key.rsplit("_", 1)[0] for key in data.files if key.startswith("set")})
    return [(data[f"{n}_boxes"].astype(np.float64), data[f"{n}_scores"].astype(np.float64), data[f"{n}_keep"])
            for n in names]


def nms(boxes: np.ndarray, scores: np.ndarray, **kwargs) -> list[int]:
    return rotated_nms(torch.from_numpy(boxes), torch.from_numpy(scores), **kwargs).tolist()


def test_duplicates_are_suppressed_and_distinct_boxes_kept():
    boxes = np.array(
        [
            [0.0, 0.0, 0.0, 4.5, 2.0, 1.6, 0.0],
            [0.1, 0.05, 0.0, 4.4, 2.0, 1.6, 0.05],  # duplicate of 0, lower score
            [10.0, 0.0, 0.0, 4.5, 2.0, 1.6, 1.0],
            [0.0, 0.0, 0.0, 4.5, 2.0, 1.6, np.pi / 2],  # crosses 0: IoU 4 / 14.0
        ]
    )
    scores = np.array([0.8, 0.9, 0.5, 0.3])
    assert nms(boxes, scores, iou_threshold=0.5) == [1, 2, 3]
    assert nms(boxes, scores, iou_threshold=0.2) == [1, 2]


def test_max_detections_and_empty_input():
    boxes = np.array([[i * 10.0, 0, 0, 4, 2, 1.5, 0] for i in range(5)])
    assert nms(boxes, np.arange(5.0), iou_threshold=0.1, max_detections=2) == [4, 3]
    empty = rotated_nms(torch.zeros(0, 7), torch.zeros(0), iou_threshold=0.1)
    assert empty.shape == (0,) and empty.dtype == torch.int64


def test_threshold_outside_unit_interval_is_refused():
    with pytest.raises(PerceptionError, match="iou_threshold"):
        rotated_nms(torch.zeros(1, 7), torch.zeros(1), iou_threshold=-0.1)


def test_recorded_candidate_sets_keep_what_the_numpy_nms_kept():
    data = np.load(FIXTURE)
    kwargs = {"iou_threshold": float(data["iou_threshold"]), "max_detections": int(data["max_detections"])}
    sets = recorded_sets()
    assert len(sets) >= 9 and max(len(b) for b, _, _ in sets) == 512
    for boxes, scores, keep in sets:
        assert nms(boxes, scores, **kwargs) == keep.tolist()
        assert rotated_nms_numpy(boxes, scores, **kwargs).tolist() == keep.tolist()


def clusters(rng: np.random.Generator, objects: int, per_object: int) -> tuple[np.ndarray, np.ndarray]:
    """Candidates as a detection head makes them: jittered copies around each object, some
    turned a quarter, ties in score included."""
    centre = np.repeat(rng.uniform(-30, 30, (objects, 2)), per_object, axis=0)
    n = len(centre)
    boxes = np.column_stack([
        centre + rng.normal(0, 0.8, (n, 2)), rng.normal(-1, 0.1, n),
        rng.uniform(3.5, 5.0, n), rng.uniform(1.6, 2.2, n), rng.uniform(1.4, 1.8, n),
        rng.normal(0, 0.2, n) + rng.integers(0, 2, n) * np.pi / 2,
    ])
    return boxes, np.round(rng.uniform(0, 1, n), 2)


@pytest.mark.parametrize("threshold", [0.0, 0.15, 0.5, 0.9])
def test_random_clusters_match_the_numpy_reference(threshold):
    rng = np.random.default_rng(7)
    for objects, per_object in [(1, 1), (3, 12), (20, 15)]:
        boxes, scores = clusters(rng, objects, per_object)
        for cap in (None, 5):
            expected = rotated_nms_numpy(boxes, scores, iou_threshold=threshold, max_detections=cap)
            assert nms(boxes, scores, iou_threshold=threshold, max_detections=cap) == expected.tolist()


def test_long_suppression_chain_and_exact_duplicates():
    # each box overlaps only its neighbours (IoU 0.6 > 0.5): the greedy keeps every other one
    chain = np.array([[i * 1.0, 0, 0, 4.0, 2.0, 1.5, 0.0] for i in range(40)])
    scores = np.linspace(1.0, 0.5, 40)
    expected = rotated_nms_numpy(chain, scores, iou_threshold=0.5)
    assert nms(chain, scores, iou_threshold=0.5) == expected.tolist()
    twins = np.repeat(chain[:3], 2, axis=0)
    expected = rotated_nms_numpy(twins, np.ones(6), iou_threshold=0.5)
    assert nms(twins, np.ones(6), iou_threshold=0.5) == expected.tolist()


@pytest.mark.parametrize("threshold", [0.0, 0.15, 0.5])
def test_every_pair_finds_the_overlaps_the_bound_leaves_in(threshold):
    """CUDA measures every pair, the CPU only those its bound cannot rule out: same overlaps."""
    rng = np.random.default_rng(3)
    sets = [b for b, _, _ in recorded_sets()[:3]] + [clusters(rng, 20, 15)[0], clusters(rng, 3, 12)[0]]
    for boxes in sets:
        boxes = torch.from_numpy(boxes)
        found = [
            sorted(zip(*(t.tolist() for t in _overlapping_pairs(boxes, threshold, every_pair)), strict=True))
            for every_pair in (True, False)
        ]
        assert found[0] == found[1] and len(found[0]) > 0


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_keeps_the_same_boxes():
    data = np.load(FIXTURE)
    kwargs = {"iou_threshold": float(data["iou_threshold"]), "max_detections": int(data["max_detections"])}
    for boxes, scores, keep in recorded_sets():
        kept = rotated_nms(torch.from_numpy(boxes).cuda(), torch.from_numpy(scores).cuda(), **kwargs)
        assert kept.device.type == "cuda" and kept.tolist() == keep.tolist()
