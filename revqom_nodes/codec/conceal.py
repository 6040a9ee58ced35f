"""Concealment of lost cells at the receiver, before the post-affine decoder.

A cell that did not arrive (its slice was lost) but has at least one received cell among its
8 neighbours takes the mean of their quantized features (the codeword sums), and counts as
received from then on; cells with no received neighbour stay missing. With interleaved slices
(``codec/slices.py``) a lost slice takes every s-th cell of a band, so every lost cell has
received neighbours and the partner's map comes back whole, only smoother there. One pass,
no learned weights: the rule is the same for every model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def concealed_valid(valid: torch.Tensor) -> torch.Tensor:
    """(B, H, W) bool cells received -> (B, H, W) bool cells received or concealed (a received
    cell in their 3 x 3 neighbourhood)."""
    return F.max_pool2d(valid.to(torch.float32).unsqueeze(1), 3, stride=1, padding=1)[:, 0] > 0


def conceal(quantized: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """quantized (B, Cr, H, W) float with cells ``valid`` (B, H, W) bool received -> (quantized with
    the concealable cells filled by the mean of their received neighbours, ``concealed_valid``).
    Received cells are unchanged; cells left missing are zero."""
    mask = valid.to(quantized.dtype).unsqueeze(1)  # (B, 1, H, W)
    channels = quantized.shape[1]
    ones = torch.ones(channels, 1, 3, 3, dtype=quantized.dtype, device=quantized.device)
    neighbour_sum = F.conv2d(quantized * mask, ones, padding=1, groups=channels)
    neighbour_count = F.conv2d(mask, ones[:1], padding=1)
    filled = neighbour_sum / neighbour_count.clamp_min(1.0)
    return torch.where(mask > 0, quantized, filled), concealed_valid(valid)
