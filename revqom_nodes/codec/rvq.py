"""Residual vector quantization with EMA codebooks, dead-code refresh and usage statistics.

Shapes: z (B, Cr, H, W) float; indices (B, Q, H, W) int64 in [0, K); codebooks (Q, K, Cr).
Stage q picks the nearest (L2) codeword of codebook q for the current residual r_q, then
r_{q+1} = r_q - E_q[k_q]; the reconstruction is z_q = sum_q E_q[k_q].

Codebooks are buffers updated by exponential moving averages in training mode only:
cluster_size <- d * cluster_size + (1 - d) * counts, embed_sum <- d * embed_sum + (1 - d) * sums,
codebook = embed_sum / (cluster_size + 1e-5). Distributed training: when
``torch.distributed`` is initialized, each stage's batch statistics (counts and sums) are
summed over all replicas with one ``all_reduce`` before the EMA step, so every replica applies
the same update (that of the global batch); dead-code replacements are drawn on every replica
and then broadcast from rank 0, so the refreshed codewords are identical everywhere too.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import distributed as dist
from torch import nn

from revqom_nodes.codec.config import CodecConfig
from revqom_nodes.codec.errors import CodecError

_EPS = 1e-5
_DISTANCE_CHUNK_ELEMENTS = 1 << 24  # bounds the (rows, K) distance block to 64 MiB of float32


class QuantizerOutput(NamedTuple):
    """quantized: (B, Cr, H, W) straight-through reconstruction; indices: (B, Q, H, W) int64;
    commitment: unweighted mse(z, sg[z_q]) scalar; perplexity: (Q,) of this batch's usage."""

    quantized: torch.Tensor
    indices: torch.Tensor
    commitment: torch.Tensor
    perplexity: torch.Tensor


def usage_histogram(indices: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """(B, Q, H, W) indices -> (Q, K) int64 counts per stage."""
    Q = indices.shape[1]
    offsets = torch.arange(Q, device=indices.device).view(1, Q, 1, 1) * codebook_size
    counts = torch.bincount((indices + offsets).flatten(), minlength=Q * codebook_size)
    return counts.view(Q, codebook_size)


def perplexity(histogram: torch.Tensor) -> torch.Tensor:
    """(Q, K) counts -> (Q,) exp(entropy in nats); K means uniform use, 1 means one code."""
    p = histogram.float() / histogram.sum(dim=1, keepdim=True).clamp_min(1)
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum(dim=1)
    return entropy.exp()


def gather_codewords(codebooks: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Sum of the chosen codewords: codebooks (Q, K, Cr), indices (B, Q, H, W) of any integer dtype
    (uint8 travels lightest) on any device -> (B, Cr, H, W) on the codebooks' device.

    Raises CodecError for a wrong shape or a non-integer dtype, and, for indices on the CPU
    (checked there before they go to the codebooks' device), an index outside [0, K). Indices
    already on an accelerator are not range-checked, which would make the host wait for the
    device: they are clamped into [0, K) there (a bad index picks a wrong codeword instead of
    tripping a device-side assert); the runtime checks every index on the host when it decodes
    a payload (``wire.decode_cells``).
    """
    Q, K, Cr = codebooks.shape
    if indices.dim() != 4 or indices.shape[1] != Q:
        raise CodecError(f"indices must be (B, {Q}, H, W), got {tuple(indices.shape)}")
    if indices.dtype.is_floating_point or indices.dtype == torch.bool or indices.dtype.is_complex:
        raise CodecError(f"indices must be integers, got {indices.dtype}")
    on_host = indices.device.type == "cpu"
    if on_host and indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= K):
        raise CodecError(f"indices must lie in [0, {K}), got [{int(indices.min())}, {int(indices.max())}]")
    indices = indices.to(codebooks.device, non_blocking=True).long()  # no wait: pageable memory is staged
    if not on_host:
        indices = indices.clamp(0, K - 1)
    offsets = torch.arange(Q, device=indices.device).view(1, Q, 1, 1) * K
    codewords = F.embedding(indices + offsets, codebooks.reshape(Q * K, Cr))  # (B, Q, H, W, Cr)
    return codewords.sum(dim=1).permute(0, 3, 1, 2).contiguous()


def nearest_code(vectors: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """(N, Cr) vectors, (K, Cr) codebook -> (N,) int64 index of the nearest codeword (L2)."""
    K = codebook.shape[0]
    squared_norms = codebook.pow(2).sum(dim=1)
    chunk = max(1, _DISTANCE_CHUNK_ELEMENTS // K)
    out = torch.empty(vectors.shape[0], dtype=torch.long, device=vectors.device)
    for start in range(0, vectors.shape[0], chunk):
        block = vectors[start : start + chunk]
        distances = torch.addmm(squared_norms, block, codebook.t(), alpha=-2.0)  # |x|^2 is constant per row
        out[start : start + chunk] = distances.argmin(dim=1)
    return out


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


class ResidualVQ(nn.Module):
    """Q stages of K codewords of dimension Cr, EMA-updated in training mode only."""

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        Q, K, Cr = config.num_quantizers, config.codebook_size, config.reduced_channels
        self.ema_decay = config.ema_decay
        self.dead_code_threshold = config.dead_code_threshold
        codebooks = torch.randn(Q, K, Cr) * config.codebook_init_std
        self.register_buffer("codebooks", codebooks)
        self.register_buffer("cluster_size", torch.ones(Q, K))
        self.register_buffer("embed_sum", codebooks.clone())

    @property
    def codebook_size(self) -> int:
        return self.codebooks.shape[1]

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """(B, Cr, H, W) -> (B, Q, H, W) int64 indices; never changes the codebooks."""
        indices, _ = self._residual_pass(z, update=False)
        return indices

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        """Quantize with a straight-through estimator; in training mode also update the EMAs."""
        indices, z_q = self._residual_pass(z, update=self.training)
        z32 = z.float()
        commitment = F.mse_loss(z32, z_q)
        quantized = z32 + (z_q - z32).detach()
        return QuantizerOutput(
            quantized, indices, commitment, perplexity(usage_histogram(indices, self.codebook_size))
        )

    @torch.no_grad()
    def _residual_pass(self, z: torch.Tensor, *, update: bool) -> tuple[torch.Tensor, torch.Tensor]:
        B, Cr, H, W = z.shape
        with torch.autocast(device_type=z.device.type, enabled=False):
            residual = z.float().permute(0, 2, 3, 1).reshape(-1, Cr)  # b c h w -> (b h w) c
            quantized = torch.zeros_like(residual)
            stages = []
            for q in range(self.codebooks.shape[0]):
                idx = nearest_code(residual, self.codebooks[q])
                codeword = self.codebooks[q][idx]
                if update:
                    self._ema_update(q, residual, idx)
                quantized += codeword
                residual = residual - codeword
                stages.append(idx)
        indices = torch.stack(stages, dim=1).view(B, H, W, -1).permute(0, 3, 1, 2).contiguous()
        z_q = quantized.view(B, H, W, Cr).permute(0, 3, 1, 2)
        return indices, z_q

    def _ema_update(self, q: int, residual: torch.Tensor, idx: torch.Tensor) -> None:
        K, Cr = self.codebooks.shape[1:]
        stats = torch.zeros(K, Cr + 1, device=residual.device)
        stats[:, 0] = torch.bincount(idx, minlength=K).float()
        stats[:, 1:].index_add_(0, idx, residual)
        if _distributed():
            dist.all_reduce(stats, op=dist.ReduceOp.SUM)
        decay = self.ema_decay
        self.cluster_size[q].mul_(decay).add_(stats[:, 0], alpha=1.0 - decay)
        self.embed_sum[q].mul_(decay).add_(stats[:, 1:], alpha=1.0 - decay)
        self.codebooks[q].copy_(self.embed_sum[q] / (self.cluster_size[q] + _EPS).unsqueeze(1))
        self._refresh_dead_codes(q, residual)

    def _refresh_dead_codes(self, q: int, residual: torch.Tensor) -> None:
        """Codes with EMA usage below the threshold restart at random current residuals."""
        dead = self.cluster_size[q] < self.dead_code_threshold
        num_dead = int(dead.sum())
        if num_dead == 0:
            return
        picks = torch.randint(residual.shape[0], (num_dead,), device=residual.device)
        samples = residual[picks].contiguous()
        if _distributed():
            dist.broadcast(samples, src=0)
        self.codebooks[q][dead] = samples
        self.embed_sum[q][dead] = samples * self.dead_code_threshold
        self.cluster_size[q][dead] = self.dead_code_threshold
