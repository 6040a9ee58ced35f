"""Two ``torchrun`` processes on the CPU (gloo) end with bit-identical weights, buffers and codebooks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("ddp_worker.py")
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_two_cpu_ranks_stay_identical(tiny_config: Path, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "REVQOM_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               str(WORKER), str(tiny_config), str(tmp_path)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-4000:]
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    assert any(k.endswith("running_mean") for k in rank0)  # BatchNorm statistics are compared too
    usage = rank0["codec.quantizer.cluster_size"]
    assert not torch.equal(usage, torch.ones_like(usage))  # the codebook EMAs moved in 3 steps
    checkpoint = torch.load(tmp_path / "run" / "checkpoint_last.pt", weights_only=True)
    assert checkpoint["step"] == 3
