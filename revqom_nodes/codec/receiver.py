"""``CodecDecoder``: the receiver side built from a frozen ``CodecState`` alone (no encoder weights)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from revqom_nodes.codec.bottleneck import DecodedBev, PostAffineDecoder
from revqom_nodes.codec.config import CodecConfig
from revqom_nodes.codec.errors import CodecError
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

        Raises CodecError for a wrong shape, dtype or an out-of-range index (on the host;
        ``gather_codewords``).
        """
        return self.decoder(gather_codewords(self.codebooks, indices),
                            None if valid is None else valid.to(self.codebooks.device))

    @torch.no_grad()
    def decode_agents(
        self, indices: torch.Tensor, valid: Sequence[torch.Tensor | None]
    ) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
        """Every agent's map in one call: (A, Q, H, W) integer indices (uint8 travels lightest) and
        A validities, each (H, W) bool or None (every cell arrived) -> features (A, C, H, W) and
        the cells each map holds ((H, W) bool, None for a whole map), on this module's device;
        each map as ``decode`` gives it alone (bit for bit on the CPU).

        One codebook gather for all maps. On an accelerator, then one decoder pass for the whole
        maps and one for those with missing cells (whole maps unmasked, as ``decode`` does them):
        fewer kernel launches. On the CPU the decoder runs map by map, which costs nothing there
        and keeps each map bit for bit what it was alone (batched CPU convolutions can round
        differently, by about 1e-7).
        """
        if len(valid) != indices.shape[0]:
            raise CodecError(f"{indices.shape[0]} maps but {len(valid)} validity masks")
        quantized = gather_codewords(self.codebooks, indices)
        device = quantized.device
        if device.type == "cpu":
            alone = [self.decoder(quantized[a : a + 1], None if v is None else v[None])
                     for a, v in enumerate(valid)]
            return torch.cat([d.bev for d in alone]), [None if d.valid is None else d.valid[0] for d in alone]
        partial = [a for a, v in enumerate(valid) if v is not None]
        if not partial:
            return self.decoder(quantized).bev, [None] * len(valid)
        masks = torch.stack([valid[a] for a in partial]).to(device, non_blocking=True)
        if len(partial) == len(valid):
            decoded = self.decoder(quantized, masks)
            return decoded.bev, list(decoded.valid)
        whole = [a for a, v in enumerate(valid) if v is None]
        whole_rows, partial_rows = (
            torch.tensor(rows).to(device, non_blocking=True) for rows in (whole, partial)
        )
        concealed = self.decoder(quantized.index_select(0, partial_rows), masks)
        bev = concealed.bev.new_empty((len(valid), *concealed.bev.shape[1:]))
        bev.index_copy_(0, whole_rows, self.decoder(quantized.index_select(0, whole_rows)).bev)
        bev.index_copy_(0, partial_rows, concealed.bev)
        held: list[torch.Tensor | None] = [None] * len(valid)
        for row, a in enumerate(partial):
            held[a] = concealed.valid[row]
        return bev, held
