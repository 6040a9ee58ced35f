"""Fusion of the agents' warped BEV maps into one ego map, per BEV location.

``attention``: at every cell the ego's feature queries all agents' features at
that cell (scaled dot-product, multi-head), agents without valid data there are
masked out; the result is added to the ego feature (residual). ``max``: the
element-wise maximum over the valid agents. Both take any number of agents
(ego first) and give the same result for an agent that is absent and one whose
mask is all False; a cell with no valid agent fuses to zeros (never NaN).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from revqom_nodes.perception.errors import PerceptionError


def _check(features: Tensor, valid: Tensor) -> None:
    if features.dim() != 4 or valid.shape != (features.shape[0], *features.shape[2:]):
        raise PerceptionError(
            f"fusion needs features (A, C, H, W) and valid (A, H, W), got {tuple(features.shape)} "
            f"and {tuple(valid.shape)}"
        )


class AttentionFusion(nn.Module):
    """Per-cell multi-head attention of the ego over the agents: (A, C, H, W) -> (1, C, H, W)."""

    def __init__(self, *, channels: int, num_heads: int) -> None:
        super().__init__()
        if channels % num_heads:
            raise PerceptionError(f"channels {channels} not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.query = nn.Conv2d(channels, channels, 1)
        self.key = nn.Conv2d(channels, channels, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, features: Tensor, valid: Tensor) -> Tensor:
        """features (A, C, H, W) ego first, valid (A, H, W) bool -> fused (1, C, H, W)."""
        _check(features, valid)
        num_agents, channels, height, width = features.shape
        heads, dim = self.num_heads, channels // self.num_heads
        # An agent's invalid cells get zero weight below; only the ego's residual needs its mask
        ego = features[:1] * valid[:1].unsqueeze(1).to(features.dtype)
        q = self.query(ego).view(1, heads, dim, height, width)
        k = self.key(features).view(num_agents, heads, dim, height, width)
        v = self.value(features).view(num_agents, heads, dim, height, width)
        # Products summed over dim, broadcast: einsum's bmm permuted (A, H, W, heads, dim) copies
        # first, 5 ms of an extra agent's 10 on one CPU thread.
        logits = (q * k).sum(dim=2) / dim**0.5  # (A, heads, H, W)
        logits = logits.masked_fill(~valid.unsqueeze(1), float("-inf"))
        any_valid = valid.any(dim=0)  # (H, W)
        logits = torch.where(any_valid, logits, torch.zeros_like(logits))  # no all -inf softmax
        weights = logits.softmax(dim=0) * any_valid.to(features.dtype)
        attended = (weights.unsqueeze(2) * v).sum(dim=0).reshape(1, channels, height, width)
        return ego + self.out(attended) * any_valid.to(features.dtype)


class MaxFusion(nn.Module):
    """Element-wise maximum over the valid agents: (A, C, H, W) -> (1, C, H, W)."""

    def forward(self, features: Tensor, valid: Tensor) -> Tensor:
        _check(features, valid)
        masked = features.masked_fill(~valid.unsqueeze(1), float("-inf"))
        fused = masked.max(dim=0, keepdim=True).values
        return torch.where(valid.any(dim=0), fused, torch.zeros_like(fused))


FUSION_KINDS = ("attention", "max")


def build_fusion(kind: str, *, channels: int, num_heads: int) -> nn.Module:
    """One of FUSION_KINDS."""
    if kind == "attention":
        return AttentionFusion(channels=channels, num_heads=num_heads)
    if kind == "max":
        return MaxFusion()
    raise PerceptionError(f"unknown fusion kind {kind!r}; valid: {list(FUSION_KINDS)}")
