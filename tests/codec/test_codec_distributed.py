"""EMA statistics are all-reduced and dead-code refreshes broadcast: replicas stay identical."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from revqom_nodes.codec.config import CodecConfig
from revqom_nodes.codec.rvq import ResidualVQ

CONFIG = CodecConfig(channels=4, channel_reduction_ratio=1, codebook_size=16, num_quantizers=2)
STEPS = 3


def batches(rank: int | None) -> list[torch.Tensor]:
    """Per-step (1, Cr, 16, 4) data: rank r takes its half of the global (1, Cr, 16, 8) batch."""
    generator = torch.Generator().manual_seed(123)
    full = [torch.randn(1, 4, 16, 8, generator=generator) for _ in range(STEPS)]
    return full if rank is None else [b[..., rank * 4 : (rank + 1) * 4] for b in full]


def train(config: CodecConfig, rank: int | None) -> ResidualVQ:
    torch.manual_seed(0)  # identical initial codebooks on every replica
    rvq = ResidualVQ(config).train()
    if rank is not None:
        torch.manual_seed(1000 + rank)  # different sampling streams: only the broadcast keeps them in step
    for batch in batches(rank):
        rvq(batch)
    return rvq


def worker(rank: int, store_path: str, out_dir: str) -> None:
    store = dist.FileStore(store_path, 2)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=2)
    try:
        for threshold in (0.0, 4.0):
            rvq = train(dataclasses.replace(CONFIG, dead_code_threshold=threshold), rank)
            torch.save(dict(rvq.state_dict()), Path(out_dir) / f"rank{rank}-{threshold}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_replicas_stay_identical_and_match_the_global_batch(tmp_path: Path) -> None:
    mp.spawn(worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    for threshold in (0.0, 4.0):
        rank0, rank1 = (torch.load(tmp_path / f"rank{r}-{threshold}.pt", weights_only=True) for r in (0, 1))
        for name in rank0:
            torch.testing.assert_close(rank0[name], rank1[name], rtol=0, atol=0)
    single = train(dataclasses.replace(CONFIG, dead_code_threshold=0.0), None).state_dict()
    rank0 = torch.load(tmp_path / "rank0-0.0.pt", weights_only=True)
    for name, value in single.items():
        torch.testing.assert_close(rank0[name], value, rtol=1e-5, atol=1e-5)
    refreshed = torch.load(tmp_path / "rank0-4.0.pt", weights_only=True)
    assert not torch.allclose(refreshed["codebooks"], rank0["codebooks"])  # the refresh path really ran
