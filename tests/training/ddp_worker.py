"""Run by ``torchrun`` in test_distributed.py: train a tiny config for 3 steps, save this rank's state."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import distributed as dist

from revqom_nodes.data.dairv2x import DairV2XReader
from revqom_nodes.training.config import load_config
from revqom_nodes.training.dataset import CooperativeDataset
from revqom_nodes.training.train import setup_distributed, train, with_max_iters


def main(config_path: str, out: str) -> None:
    info = setup_distributed("cpu")
    config = with_max_iters(load_config(config_path), 3)
    dataset = CooperativeDataset(
        DairV2XReader(config.data.root, config.data.split), config.model.grid,
        max_agents=config.train.max_agents, comm_range_m=config.train.comm_range_m,
        augment=config.train.augment, seed=config.train.seed,
    )
    result = train(config, dataset, Path(out) / "run", info=info, progress=False)
    torch.save(result.detector.state_dict(), Path(out) / f"rank{info.rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:3])
