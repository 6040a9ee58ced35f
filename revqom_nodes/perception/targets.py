"""Anchor target assignment and the detection losses.

Assignment uses the nearest axis-aligned BEV IoU (each box's yaw snapped to the
nearer of 0 and pi/2, the usual fast choice): an anchor is positive when its best
IoU reaches ``positive_iou`` or it is the best anchor of some box, negative below
``negative_iou``, ignored in between. Losses: sigmoid focal classification over
positives and negatives, smooth-L1 box regression with the sin-difference yaw
trick on positives, cross-entropy direction on positives; each is normalised by
the number of positives of its map, then averaged over maps.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from revqom_nodes.perception.box_coding import direction_targets, encode_boxes, limit_period
from revqom_nodes.perception.config import HeadConfig
from revqom_nodes.perception.head import BOX_SIZE, HeadOutput

POSITIVE, NEGATIVE, IGNORED = 1, 0, -1
_SMOOTH_L1_BETA = 1.0 / 9.0


class AnchorTargets(NamedTuple):
    """Training targets of one map's N anchors."""

    labels: Tensor  # (N,) int64: POSITIVE, NEGATIVE or IGNORED
    box_targets: Tensor  # (N, 7) encoded deltas (meaningful where positive)
    direction: Tensor  # (N,) int64 direction bin (meaningful where positive)


class DetectionLossTerms(NamedTuple):
    """Weighted detection losses (scalars), averaged over maps."""

    classification: Tensor
    regression: Tensor
    direction: Tensor


def nearest_bev_boxes(boxes: Tensor) -> Tensor:
    """(M, 7) boxes -> (M, 4) axis-aligned BEV bounds [x0, y0, x1, y1] of the box snapped to 0 or pi/2."""
    yaw = limit_period(boxes[:, 6], 0.5, math.pi)  # [-pi/2, pi/2)
    swap = yaw.abs() > math.pi / 4
    half_x = torch.where(swap, boxes[:, 4], boxes[:, 3]) / 2
    half_y = torch.where(swap, boxes[:, 3], boxes[:, 4]) / 2
    x, y = boxes[:, 0], boxes[:, 1]
    return torch.stack([x - half_x, y - half_y, x + half_x, y + half_y], dim=1)


def nearest_bev_iou(anchors: Tensor, boxes: Tensor) -> Tensor:
    """(N, 7) anchors, (M, 7) boxes -> (N, M) axis-aligned BEV IoU of the snapped boxes."""
    a, b = nearest_bev_boxes(anchors), nearest_bev_boxes(boxes)
    low = torch.maximum(a[:, None, :2], b[None, :, :2])
    high = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (high - low).clamp(min=0).prod(dim=-1)
    area_a = (a[:, 2:] - a[:, :2]).prod(dim=-1)
    area_b = (b[:, 2:] - b[:, :2]).prod(dim=-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-6)


@torch.no_grad()
def assign_targets(anchors: Tensor, gt_boxes: Tensor, head: HeadConfig) -> AnchorTargets:
    """(N, 7) anchors and (M, 7) ground-truth boxes of one map -> AnchorTargets."""
    num = anchors.shape[0]
    labels = torch.full((num,), NEGATIVE, dtype=torch.long, device=anchors.device)
    box_targets = torch.zeros(num, BOX_SIZE, device=anchors.device)
    direction = torch.zeros(num, dtype=torch.long, device=anchors.device)
    gt_boxes = gt_boxes.to(device=anchors.device, dtype=anchors.dtype)
    if gt_boxes.shape[0] == 0:
        return AnchorTargets(labels, box_targets, direction)
    iou = nearest_bev_iou(anchors, gt_boxes)  # (N, M)
    best_iou, best_gt = iou.max(dim=1)
    labels[(best_iou >= head.negative_iou) & (best_iou < head.positive_iou)] = IGNORED
    labels[best_iou >= head.positive_iou] = POSITIVE
    per_gt_best = iou.max(dim=0).values  # (M,)
    forced = (iou == per_gt_best[None]) & (per_gt_best[None] > 0)  # best anchors of each box
    forced_anchor, forced_gt = torch.nonzero(forced, as_tuple=True)
    labels[forced_anchor] = POSITIVE
    best_gt[forced_anchor] = forced_gt
    positive = labels == POSITIVE
    matched = gt_boxes[best_gt[positive]]
    box_targets[positive] = encode_boxes(matched, anchors[positive])
    direction[positive] = direction_targets(matched[:, 6])
    return AnchorTargets(labels, box_targets, direction)


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, *, alpha: float, gamma: float) -> Tensor:
    """Element-wise focal loss of logits against {0, 1} float targets."""
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return alpha_t * (1 - p_t) ** gamma * ce


def detection_loss_terms(
    output: HeadOutput, targets: list[AnchorTargets], head: HeadConfig
) -> DetectionLossTerms:
    """Head outputs of S maps and their S AnchorTargets -> weighted loss terms."""
    cls_terms, reg_terms, dir_terms = [], [], []
    for s, target in enumerate(targets):
        positive = target.labels == POSITIVE
        normaliser = positive.sum().clamp(min=1).to(output.class_logits.dtype)
        cared = target.labels != IGNORED
        focal = sigmoid_focal_loss(
            output.class_logits[s][cared], positive[cared].to(output.class_logits.dtype),
            alpha=head.focal_alpha, gamma=head.focal_gamma,
        )
        cls_terms.append(focal.sum() / normaliser)
        pred, goal = output.box_deltas[s][positive], target.box_targets[positive]
        pred_yaw = torch.sin(pred[:, 6:]) * torch.cos(goal[:, 6:])  # sin(a - b) = this - the next
        goal_yaw = torch.cos(pred[:, 6:]) * torch.sin(goal[:, 6:])
        pred = torch.cat([pred[:, :6], pred_yaw], dim=1)
        goal = torch.cat([goal[:, :6], goal_yaw], dim=1)
        reg_terms.append(F.smooth_l1_loss(pred, goal, beta=_SMOOTH_L1_BETA, reduction="sum") / normaliser)
        direction = F.cross_entropy(
            output.direction_logits[s][positive], target.direction[positive], reduction="sum"
        )
        dir_terms.append(direction / normaliser)
    return DetectionLossTerms(
        classification=head.classification_weight * torch.stack(cls_terms).mean(),
        regression=head.regression_weight * torch.stack(reg_terms).mean(),
        direction=head.direction_weight * torch.stack(dir_terms).mean(),
    )
