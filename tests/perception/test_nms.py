"""Rotated NMS: duplicates go, distinct boxes stay, order by score."""

import numpy as np

from revqom_nodes.perception.nms import rotated_nms


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
    keep = rotated_nms(boxes, scores, iou_threshold=0.5)
    assert keep.tolist() == [1, 2, 3]
    keep_strict = rotated_nms(boxes, scores, iou_threshold=0.2)
    assert keep_strict.tolist() == [1, 2]


def test_max_detections_and_empty_input():
    boxes = np.array([[i * 10.0, 0, 0, 4, 2, 1.5, 0] for i in range(5)])
    keep = rotated_nms(boxes, np.arange(5.0), iou_threshold=0.1, max_detections=2)
    assert keep.tolist() == [4, 3]
    assert rotated_nms(np.zeros((0, 7)), np.zeros(0), iou_threshold=0.1).shape == (0,)
