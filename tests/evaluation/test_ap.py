"""AP with the OpenCOOD protocol: the reference test vector and hand-made edge cases."""

import numpy as np
import pytest

from revqom_nodes.evaluation.ap import ApAccumulator, average_precision, evaluate, inside_range, voc_ap
from revqom_nodes.evaluation.errors import EvaluationError

CAR = np.array([4.5, 2.0, 1.6])


def box(x: float, y: float, yaw: float = 0.0) -> np.ndarray:
    return np.array([x, y, -1.0, *CAR, yaw])


def test_reference_vector_tp_fp_tp():
    """nGT = 3, sorted outcomes TP, FP, TP -> AP = 0.5556 (dair-v2x.md)."""
    assert average_precision(np.array([0.9, 0.8, 0.7]), np.array([True, False, True]), 3) == pytest.approx(
        5 / 9, abs=1e-4
    )


def test_reference_vector_through_matching():
    gt = np.stack([box(0, 0), box(10, 0), box(20, 0)])
    preds = np.stack([box(0.1, 0), box(-30, 5), box(10, 0.1)])
    result = evaluate([(preds, np.array([0.9, 0.8, 0.7]))], [gt])
    assert result["0.5"] == pytest.approx(0.5556, abs=1e-4)
    assert set(result) == {"0.3", "0.5", "0.7"}


def test_voc_ap_perfect_and_empty():
    assert voc_ap(np.array([0.5, 1.0]), np.array([1.0, 1.0])) == pytest.approx(1.0)
    assert average_precision(np.zeros(0), np.zeros(0, dtype=bool), 4) == 0.0
    assert average_precision(np.array([0.5]), np.array([False]), 0) == 0.0


def test_iou_thresholds_decide_true_positives():
    gt = box(0, 0)[None]
    shifted = box(1.4, 0)[None]  # IoU = 3.1 * 2 / (2 * 9 - 6.2) = 0.525
    result = evaluate([(shifted, np.array([0.9]))], [gt])
    assert result == {"0.3": pytest.approx(1.0), "0.5": pytest.approx(1.0), "0.7": 0.0}
    further = box(2.0, 0)[None]  # IoU = 2.5 * 2 / (18 - 5) = 0.385
    assert evaluate([(further, np.array([0.9]))], [gt])["0.5"] == 0.0


def test_duplicate_detection_is_a_false_positive():
    gt = box(0, 0)[None]
    preds = np.stack([box(0, 0), box(0.05, 0)])
    scores = np.array([0.9, 0.8])
    # TP then FP: precision [1, 0.5], recall [1, 1] -> AP 1; a lower-scored duplicate does not hurt AP
    assert evaluate([(preds, scores)], [gt])["0.7"] == pytest.approx(1.0)
    # a higher-scored duplicate of an already matched box ranks before the second TP and does hurt
    gt2 = np.stack([box(0, 0), box(10, 0)])
    preds2 = np.stack([box(0, 0), box(0.05, 0), box(10, 0)])
    ap = evaluate([(preds2, np.array([0.9, 0.8, 0.7]))], [gt2])["0.7"]
    assert ap == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_empty_frames_count_ground_truth():
    gt = box(0, 0)[None]
    frames = [(box(0, 0)[None], np.array([0.9])), (np.zeros((0, 7)), np.zeros(0))]
    result = evaluate(frames, [gt, gt])
    assert result["0.5"] == pytest.approx(0.5)  # one of two GT found, precision 1
    assert evaluate([(np.zeros((0, 7)), np.zeros(0))], [np.zeros((0, 7))])["0.5"] == 0.0
    assert evaluate([(box(0, 0)[None], np.array([0.9]))], [np.zeros((0, 7))])["0.5"] == 0.0


def test_global_sort_across_frames():
    """Frame 2's high-scoring FP ranks before frame 1's lower TP."""
    frames = [
        (box(0, 0)[None], np.array([0.5])),
        (box(30, 0)[None], np.array([0.9])),
    ]
    gts = [box(0, 0)[None], box(0, 0)[None]]
    # order: FP (0.9), TP (0.5); nGT 2 -> recall [0, .5], precision [0, .5] -> AP 0.25
    assert evaluate(frames, gts)["0.5"] == pytest.approx(0.25)


def test_range_filter_applies_to_predictions_and_ground_truth():
    assert inside_range(np.stack([box(0, 0), box(99, 0), box(0, 39.5)]), (-100, -40, 100, 40)).tolist() == [
        True,
        False,  # corner at x = 101.25
        False,  # corner at y = 40.5
    ]
    gt = np.stack([box(0, 0), box(60, 0)])
    preds = np.stack([box(0, 0), box(60, 0), box(-60, 0)])
    result = evaluate([(preds, np.array([0.9, 0.8, 0.7]))], [gt], range_m=(-50, -50, 50, 50))
    assert result["0.7"] == pytest.approx(1.0)


def test_accumulator_streams_like_evaluate():
    rng = np.random.default_rng(3)
    preds, gts = [], []
    accumulator = ApAccumulator(range_m=(-50, -50, 50, 50))
    for _ in range(5):
        gt = np.stack([box(*rng.uniform(-40, 40, 2), rng.uniform(-3, 3)) for _ in range(4)])
        pred = gt + rng.normal(0, 0.4, gt.shape) * np.array([1, 1, 0, 0, 0, 0, 0.3])
        scores = rng.uniform(0, 1, len(pred))
        preds.append((pred, scores))
        gts.append(gt)
        accumulator.add_frame(pred, scores, gt)
    assert accumulator.result() == evaluate(preds, gts, range_m=(-50, -50, 50, 50))
    assert accumulator.num_frames == 5 and accumulator.num_gt == 20


def test_bad_input_is_rejected():
    with pytest.raises(EvaluationError, match="scores"):
        evaluate([(box(0, 0)[None], np.array([0.9, 0.8]))], [np.zeros((0, 7))])
    with pytest.raises(EvaluationError, match="frames"):
        evaluate([], [np.zeros((0, 7))])
    with pytest.raises(EvaluationError, match=r"\(M, 7\)"):
        evaluate([(np.zeros((2, 6)), np.zeros(2))], [np.zeros((0, 7))])
    with pytest.raises(EvaluationError, match="range_m"):
        ApAccumulator(range_m=(10, 0, -10, 5))
