"""Sender bottleneck (C -> Cr) and receiver post-affine decoder (Cr -> C), as in ReVQom."""

from __future__ import annotations

import torch
from torch import nn

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


class PostAffineDecoder(nn.Module):
    """ConvKxK(Cr -> Cr) + ReLU, Conv1x1(Cr -> C) + ReLU, GroupNorm: (B, Cr, H, W) -> (B, C, H, W);
    K = ``decoder_kernel_size`` (1 in the reference), zero padding keeps H and W."""

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        k, reduced = config.decoder_kernel_size, config.reduced_channels
        self.conv1 = nn.Conv2d(reduced, reduced, kernel_size=k, padding=k // 2)
        self.conv2 = nn.Conv2d(config.reduced_channels, config.channels, kernel_size=1)
        self.norm = nn.GroupNorm(config.decoder_norm_groups, config.channels)

    def forward(self, quantized: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(self.conv1(quantized))
        return self.norm(torch.relu(self.conv2(hidden)))
