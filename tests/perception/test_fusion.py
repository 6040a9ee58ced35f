"""Fusion: an absent agent and a fully masked agent give the same result, and nothing is ever NaN."""

import pytest
import torch

from revqom_nodes.perception.errors import PerceptionError
from revqom_nodes.perception.fusion import build_fusion

C, H, W = 16, 8, 8


@pytest.fixture(params=["attention", "max"])
def fusion(request):
    torch.manual_seed(0)
    return build_fusion(request.param, channels=C, num_heads=4)


def test_ego_only_equals_other_agents_masked(fusion):
    features = torch.randn(3, C, H, W)
    valid = torch.ones(3, H, W, dtype=torch.bool)
    alone = fusion(features[:1], valid[:1])
    masked_valid = valid.clone()
    masked_valid[1:] = False
    together = fusion(features, masked_valid)
    torch.testing.assert_close(together, alone)
    assert not torch.allclose(fusion(features, valid), alone)  # the others do matter when valid


def test_partial_masks_select_per_cell(fusion):
    features = torch.randn(2, C, H, W)
    valid = torch.ones(2, H, W, dtype=torch.bool)
    valid[1, :, : W // 2] = False
    fused = fusion(features, valid)
    alone = fusion(features[:1], valid[:1])
    torch.testing.assert_close(fused[..., : W // 2], alone[..., : W // 2])
    assert not torch.allclose(fused[..., W // 2 :], alone[..., W // 2 :])


def test_no_valid_agent_gives_zeros_and_finite_gradients(fusion):
    features = torch.randn(2, C, H, W, requires_grad=True)
    valid = torch.zeros(2, H, W, dtype=torch.bool)
    valid[0, :4] = True  # the ego covers half the map, nobody the rest
    fused = fusion(features, valid)
    assert torch.isfinite(fused).all()
    assert (fused[..., 4:, :] == 0).all()
    fused.sum().backward()
    assert torch.isfinite(features.grad).all()


def test_attention_fusion_is_permutation_invariant_over_non_ego_agents():
    torch.manual_seed(0)
    fusion = build_fusion("attention", channels=C, num_heads=2)
    features = torch.randn(3, C, H, W)
    valid = torch.rand(3, H, W) > 0.3
    swapped = fusion(features[[0, 2, 1]], valid[[0, 2, 1]])
    torch.testing.assert_close(fusion(features, valid), swapped, atol=1e-5, rtol=1e-5)


def test_bad_kind_and_shapes_are_rejected():
    with pytest.raises(PerceptionError, match="valid"):
        build_fusion("mean", channels=C, num_heads=2)
    fusion = build_fusion("max", channels=C, num_heads=2)
    with pytest.raises(PerceptionError, match="valid"):
        fusion(torch.randn(2, C, H, W), torch.ones(3, H, W, dtype=torch.bool))
