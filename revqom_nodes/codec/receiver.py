"""``CodecDecoder``: the receiver side built from a frozen ``CodecState`` alone (no encoder weights)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from revqom_nodes.codec.bottleneck import DecodedBev, PostAffineDecoder
from revqom_nodes.codec.config import CodecConfig
from revqom_nodes.codec.rvq import gather_codewords
from revqom_nodes.codec.state import CodecState


class CodecDecoder(nn.Module):
    """Codebook gather-and-sum plus the post-affine decoder; always in eval mode, no gradients."""

    def __init__(self, state: CodecState) -> None:
        super().__init__()
        self.state = state
        self.register_buffer("codebooks", state.codebooks.clone())
        self.decoder = PostAffineDecoder(state.settings)
        self.decoder.load_state_dict(state.decoder_state, strict=True)
        self.eval()

    @property
    def config(self) -> CodecConfig:
        return self.state.settings

    @property
    def codebook_id(self) -> str:
        return self.state.codebook_id

    @property
    def entropy_tables(self) -> np.ndarray | None:
        return self.state.entropy_tables

    @torch.no_grad()
    def decode(self, indices: torch.Tensor, valid: torch.Tensor | None = None) -> DecodedBev:
        """(B, Q, H, W) integer indices in [0, K) -> DecodedBev on this module's device: features
        (B, C, H, W) float32 and the cells they hold; ``valid`` (B, H, W) bool: only those cells
        arrived (``PostAffineDecoder`` conceals what it can; None: every cell).

        Raises CodecError for a wrong shape, dtype or an out-of-range index.
        """
        device = self.codebooks.device
        return self.decoder(gather_codewords(self.codebooks, indices.to(device)),
                            None if valid is None else valid.to(device))
