"""configure_process: freed memory stays in the process (no page faults for a frame's next tensors)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# In a fresh interpreter: ten steps of a fusion-like workload on a frame of five 32-channel
# 50 x 100 maps (3.2 MB tensors: a 1x1 convolution, a warp, a product), after five to settle;
# the minor page faults per step.
_FAULTS = """
import json, resource, sys
import torch
from revqom_nodes.runtime.process import configure_process, keep_freed_memory
if sys.argv[1] == "kept":
    configure_process(1)
else:
    torch.set_num_threads(1)
maps, weight = torch.randn(5, 32, 50, 100), torch.randn(32, 32, 1, 1)
grid = torch.rand(5, 50, 100, 2) * 2 - 1
def step():
    keys = torch.nn.functional.conv2d(maps, weight)
    warped = torch.nn.functional.grid_sample(keys, grid, align_corners=False)
    return (warped * keys).sum()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
start = faults()
for _ in range(10):
    step()
print(json.dumps({"faults_per_step": (faults() - start) / 10, "threads": torch.get_num_threads(),
                  "kept": keep_freed_memory() if sys.argv[1] == "kept" else None}))
"""


def _run(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _FAULTS, mode], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_kept_memory_does_not_fault_in_again() -> None:
    default, kept = _run("default"), _run("kept")
    assert kept["kept"] is True
    assert kept["threads"] == 1
    # With glibc's defaults each step faults its tensors' pages in again (measured: 2,312 a step)
    assert default["faults_per_step"] > 500, default
    assert kept["faults_per_step"] < 50, kept
