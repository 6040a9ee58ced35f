"""Anchors follow the grid convention; target assignment and losses behave."""

import math

import pytest
import torch

from revqom_nodes.perception.config import HeadConfig
from revqom_nodes.perception.errors import PerceptionError
from revqom_nodes.perception.grid import BevGrid
from revqom_nodes.perception.head import AnchorHead, HeadOutput, make_anchors
from revqom_nodes.perception.targets import (
    IGNORED,
    NEGATIVE,
    POSITIVE,
    assign_targets,
    detection_loss_terms,
    nearest_bev_iou,
)

GRID = BevGrid(x_range_m=(-6.4, 6.4), y_range_m=(-3.2, 3.2), voxel_size_m=(0.4, 0.4, 1.0), bev_stride=2)
HEAD = HeadConfig(anchor_z_m=-1.0)


def test_anchor_order_is_row_column_rotation():
    anchors = make_anchors(GRID, HEAD)
    height, width = GRID.bev_shape
    assert anchors.shape == (height * width * 2, 7)
    grid_anchors = anchors.view(height, width, 2, 7)
    xs, ys = GRID.cell_centres()
    torch.testing.assert_close(grid_anchors[2, 5, 1, :2], torch.tensor([xs[5], ys[2]], dtype=torch.float32))
    assert grid_anchors[0, 0, 0, 6] == 0 and grid_anchors[0, 0, 1, 6] == pytest.approx(math.pi / 2)
    assert (anchors[:, 2] == -1.0).all() and (anchors[:, 3] == 4.5).all()


def test_head_output_flattening_matches_anchor_order():
    head = AnchorHead(channels=4, num_rotations=2)
    bev = torch.zeros(1, 4, *GRID.bev_shape)
    bev[0, :, 2, 5] = 1.0  # one active cell
    with torch.no_grad():
        head.classification.weight.fill_(1.0)
    out = head(bev)
    height, width = GRID.bev_shape
    assert out.class_logits.shape == (1, height * width * 2)
    assert out.box_deltas.shape == (1, height * width * 2, 7)
    hot = torch.nonzero(out.class_logits[0] > out.class_logits[0].min()).squeeze(1).tolist()
    assert hot == [(2 * width + 5) * 2, (2 * width + 5) * 2 + 1]


def test_nearest_bev_iou_snaps_rotation():
    anchors = torch.tensor([[0.0, 0.0, 0.0, 4.0, 2.0, 1.0, 0.0]])
    rotated = torch.tensor(
        [[0.0, 0.0, 0.0, 4.0, 2.0, 1.0, math.pi / 2], [0.0, 0.0, 0.0, 4.0, 2.0, 1.0, math.pi]]
    )
    iou = nearest_bev_iou(anchors, rotated)
    assert iou[0, 0] == pytest.approx(4.0 / 12.0)  # 2 x 2 overlap of two 8 m^2 boxes
    assert iou[0, 1] == pytest.approx(1.0)


def test_assignment_marks_positive_ignored_and_negative():
    anchors = make_anchors(GRID, HEAD)
    xs, ys = GRID.cell_centres()
    gt = torch.tensor([[xs[4], ys[1], -0.8, 4.5, 2.0, 1.6, 0.1]])
    targets = assign_targets(anchors, gt, HEAD)
    positive = targets.labels == POSITIVE
    assert positive.any()
    best = (1 * GRID.bev_shape[1] + 4) * 2  # cell (1, 4), rotation 0
    assert targets.labels[best] == POSITIVE
    torch.testing.assert_close(targets.box_targets[best, 2], torch.tensor(0.2 / 1.6))
    far = anchors[:, 0] > xs[4] + 6
    assert (targets.labels[far] == NEGATIVE).all()
    assert set(targets.labels.unique().tolist()) <= {POSITIVE, NEGATIVE, IGNORED}


def test_empty_ground_truth_is_all_negative_and_losses_finite():
    anchors = make_anchors(GRID, HEAD)
    targets = assign_targets(anchors, torch.zeros(0, 7), HEAD)
    assert (targets.labels == NEGATIVE).all()
    n = anchors.shape[0]
    output = HeadOutput(torch.zeros(1, n, requires_grad=True), torch.zeros(1, n, 7), torch.zeros(1, n, 2))
    terms = detection_loss_terms(output, [targets], HEAD)
    assert all(torch.isfinite(t) for t in terms)
    assert terms.regression == 0 and terms.classification > 0


def test_perfect_prediction_has_near_zero_regression_loss():
    anchors = make_anchors(GRID, HEAD)
    xs, ys = GRID.cell_centres()
    gt = torch.tensor([[xs[4] + 0.1, ys[1], -0.8, 4.2, 1.9, 1.5, 0.3]])
    targets = assign_targets(anchors, gt, HEAD)
    n = anchors.shape[0]
    confident = torch.where(targets.labels == POSITIVE, 10.0, -10.0)
    direction = torch.nn.functional.one_hot(targets.direction, 2).float() * 20 - 10
    good = HeadOutput(confident[None], targets.box_targets[None], direction[None])
    bad = HeadOutput(-confident[None], torch.zeros(1, n, 7), -direction[None])
    good_terms = detection_loss_terms(good, [targets], HEAD)
    bad_terms = detection_loss_terms(bad, [targets], HEAD)
    assert good_terms.regression < 1e-6 and good_terms.direction < 1e-6
    assert all(g < b for g, b in zip(good_terms, bad_terms, strict=True))


def test_head_blocks_add_spatial_context_and_keep_the_output_layout():
    torch.manual_seed(0)
    plain = AnchorHead(channels=8, num_rotations=2)
    context = AnchorHead(channels=8, num_rotations=2, blocks=2).eval()
    assert len(plain.blocks) == 0 and sum(p.numel() for p in context.blocks.parameters()) > 0
    bev = torch.zeros(1, 8, 6, 7)
    out = context(bev)
    assert out.class_logits.shape == plain(bev).class_logits.shape == (1, 6 * 7 * 2)
    poked = bev.clone()
    poked[0, :, 3, 3] = 1.0
    changed = (context(poked).class_logits - out.class_logits).reshape(6, 7, 2).abs().sum(-1)
    assert changed[3, 4] > 0 and changed[0, 0] == 0  # reaches two cells, not three
    with pytest.raises(PerceptionError):
        HeadConfig(blocks=-1)
