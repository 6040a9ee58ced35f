"""Sender bottleneck (C -> Cr) and receiver post-affine decoder (Cr -> C), as in ReVQom."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from revqom_nodes.codec.conceal import conceal
from revqom_nodes.codec.config import CodecConfig


class Bottleneck(nn.Module):
    """Conv1x1(C -> Cr) + GroupNorm: (B, C, H, W) -> (B, Cr, H, W)."""

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        self.conv = nn.Conv2d(config.channels, config.reduced_channels, kernel_size=1)
        self.norm = nn.GroupNorm(config.bottleneck_norm_groups, config.reduced_channels)

    def forward(self, bev: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(bev))

    def orthogonality_loss(self) -> torch.Tensor:
        """mean((W W^T - I)^2) over the (Cr, C) 1x1 weight W (unweighted, scalar)."""
        weight = self.conv.weight.flatten(1)
        gram = weight @ weight.t()
        eye = torch.eye(gram.shape[0], device=gram.device, dtype=gram.dtype)
        return (gram - eye).pow(2).mean()


class DecodedBev(NamedTuple):
    """What the receiver rebuilds from indices: the features and the cells they hold."""

    bev: torch.Tensor  # (B, C, H, W) float32
    valid: torch.Tensor | None  # (B, H, W) bool cells received or concealed (``concealed_valid``); None: all


class PostAffineDecoder(nn.Module):
    """ConvKxK(Cr -> Cr) + ReLU, Conv1x1(Cr -> C) + ReLU, GroupNorm: (B, Cr, H, W) -> (B, C, H, W);
    K = ``decoder_kernel_size`` (1 in the reference), zero padding keeps H and W.

    ``valid`` (B, H, W) bool, for maps of which only some cells arrived (lost slices): missing
    cells next to received ones are concealed first (``codec/conceal.py``; the returned validity
    is ``concealed_valid(valid)``, computed there alone); the cells still missing enter the
    convs as zeros (like the map's border) and are left out of the GroupNorm statistics, which
    otherwise span the whole map, so that losing cells does not shift every other cell's
    features; they come out as zeros. All True gives exactly the unmasked result.
    """

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        k, reduced = config.decoder_kernel_size, config.reduced_channels
        self.conv1 = nn.Conv2d(reduced, reduced, kernel_size=k, padding=k // 2)
        self.conv2 = nn.Conv2d(config.reduced_channels, config.channels, kernel_size=1)
        self.norm = nn.GroupNorm(config.decoder_norm_groups, config.channels)

    def forward(self, quantized: torch.Tensor, valid: torch.Tensor | None = None) -> DecodedBev:
        """(B, Cr, H, W) codeword sums, ``valid`` (B, H, W) bool or None -> DecodedBev."""
        if valid is None:
            hidden = torch.relu(self.conv1(quantized))
            return DecodedBev(self.norm(torch.relu(self.conv2(hidden))), None)
        quantized, valid = conceal(quantized, valid)
        mask = valid.to(quantized.dtype).unsqueeze(1)  # (B, 1, H, W)
        hidden = torch.relu(self.conv1(quantized * mask))
        return DecodedBev(self._masked_norm(torch.relu(self.conv2(hidden)), mask) * mask, valid)

    def _masked_norm(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """GroupNorm of (B, C, H, W) ``x`` with statistics over the cells where ``mask`` is 1."""
        batch, channels, height, width = x.shape
        groups = self.norm.num_groups
        grouped = x.reshape(batch, groups, channels // groups, height, width)
        weight = mask.unsqueeze(1)  # (B, 1, 1, H, W)
        count = (weight.sum(dim=(2, 3, 4), keepdim=True) * (channels // groups)).clamp_min(1.0)
        mean = (grouped * weight).sum(dim=(2, 3, 4), keepdim=True) / count
        var = (((grouped - mean) ** 2) * weight).sum(dim=(2, 3, 4), keepdim=True) / count
        normalized = ((grouped - mean) / torch.sqrt(var + self.norm.eps)).reshape(x.shape)
        return normalized * self.norm.weight.view(1, -1, 1, 1) + self.norm.bias.view(1, -1, 1, 1)
