"""Box coding round trip and the direction-bin convention."""

import math

import torch

from revqom_nodes.perception.box_coding import (
    apply_direction,
    decode_boxes,
    direction_targets,
    encode_boxes,
    limit_period,
)


def random_boxes(n: int, generator: torch.Generator) -> torch.Tensor:
    centre = torch.rand(n, 3, generator=generator, dtype=torch.float64) * 40 - 20
    size = torch.rand(n, 3, generator=generator, dtype=torch.float64) * 4 + 0.5
    yaw = torch.rand(n, 1, generator=generator, dtype=torch.float64) * 2 * math.pi - math.pi
    return torch.cat([centre, size, yaw], dim=1)


def test_encode_decode_round_trip():
    generator = torch.Generator().manual_seed(0)
    boxes, anchors = random_boxes(200, generator), random_boxes(200, generator)
    deltas = encode_boxes(boxes, anchors)
    torch.testing.assert_close(decode_boxes(deltas, anchors), boxes)


def test_box_on_its_anchor_encodes_to_zero():
    anchor = torch.tensor([[1.0, 2.0, -1.0, 4.5, 2.0, 1.6, 0.5]])
    torch.testing.assert_close(encode_boxes(anchor, anchor), torch.zeros(1, 7))


def test_direction_resolves_the_half_turn():
    generator = torch.Generator().manual_seed(1)
    yaw = torch.rand(500, generator=generator, dtype=torch.float64) * 2 * math.pi - math.pi
    bins = direction_targets(yaw)
    assert set(bins.tolist()) == {0, 1}
    ambiguous = yaw + math.pi * torch.randint(-2, 3, (500,), generator=generator)
    restored = apply_direction(ambiguous, bins)
    assert torch.all(restored >= -math.pi) and torch.all(restored < math.pi)
    error = limit_period(restored - yaw, 0.5, 2 * math.pi)
    torch.testing.assert_close(error, torch.zeros_like(yaw), atol=1e-6, rtol=0)
