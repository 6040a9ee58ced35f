"""``ReVQomCodec``: bottleneck -> residual VQ -> post-affine decoder, with the transmission
boundary visible: ``encode(bev) -> indices`` on the sender, ``decode(indices) -> bev`` on the
receiver, ``forward(bev) -> CodecOutput`` for training."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from revqom_nodes.codec.bottleneck import Bottleneck, PostAffineDecoder
from revqom_nodes.codec.config import CodecConfig
from revqom_nodes.codec.context import ContextTables
from revqom_nodes.codec.errors import CodecError
from revqom_nodes.codec.rvq import ResidualVQ, gather_codewords
from revqom_nodes.codec.state import CodecState


class CodecLosses(NamedTuple):
    """Scalar losses, already multiplied by their config weights."""

    commitment: torch.Tensor
    orthogonal: torch.Tensor

    @property
    def total(self) -> torch.Tensor:
        return self.commitment + self.orthogonal


class CodecOutput(NamedTuple):
    """bev: (B, C, H, W) decoder output; valid: (B, H, W) bool cells it holds (None: all);
    indices: (B, Q, H, W) int64; perplexity: (Q,)."""

    bev: torch.Tensor
    valid: torch.Tensor | None
    indices: torch.Tensor
    losses: CodecLosses
    perplexity: torch.Tensor


class ReVQomCodec(nn.Module):
    """The full codec; ``.encoder`` (bottleneck), ``.quantizer`` (ResidualVQ), ``.decoder`` (post-affine)."""

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Bottleneck(config)
        self.quantizer = ResidualVQ(config)
        self.decoder = PostAffineDecoder(config)

    def _check_bev(self, bev: torch.Tensor) -> None:
        if bev.dim() != 4 or bev.shape[1] != self.config.channels:
            raise CodecError(f"bev must be (B, {self.config.channels}, H, W), got {tuple(bev.shape)}")

    @torch.no_grad()
    def encode(self, bev: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) float -> (B, Q, H, W) int64 indices in [0, K); never changes the codebooks."""
        self._check_bev(bev)
        return self.quantizer.quantize(self.encoder(bev))

    def decode(self, indices: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """(B, Q, H, W) integer indices -> (B, C, H, W) float32 reconstruction (codebooks + decoder only);
        ``valid`` (B, H, W) bool: only those cells arrived (``PostAffineDecoder``). The receiver's
        ``CodecDecoder.decode`` also returns the cells the map holds."""
        codebooks = self.quantizer.codebooks
        return self.decoder(
            gather_codewords(codebooks, indices),
            None if valid is None else valid.to(codebooks.device),
        ).bev

    def forward(self, bev: torch.Tensor, valid: torch.Tensor | None = None) -> CodecOutput:
        """Training pass: straight-through quantization; the EMAs move only in training mode.
        ``valid`` (B, H, W) bool: decode as a receiver that got only those cells (slice dropout)."""
        self._check_bev(bev)
        out = self.quantizer(self.encoder(bev))
        losses = CodecLosses(
            commitment=self.config.commitment_weight * out.commitment,
            orthogonal=self.config.orthogonal_weight * self.encoder.orthogonality_loss(),
        )
        decoded = self.decoder(out.quantized, valid)
        return CodecOutput(decoded.bev, decoded.valid, out.indices, losses, out.perplexity)

    def export_state(
        self, entropy_tables: np.ndarray | None = None, context_tables: ContextTables | None = None
    ) -> CodecState:
        """The frozen receiver side: settings, codebooks, decoder weights, optional (Q, K) tables
        and context tables."""
        return CodecState.build(
            settings=self.config,
            codebooks=self.quantizer.codebooks,
            decoder_state=self.decoder.state_dict(),
            entropy_tables=entropy_tables,
            context_tables=context_tables,
        )
