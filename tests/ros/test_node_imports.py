"""Nodes import only what they use: the recorder and the replay node never load torch.

torch costs seconds of start-up and, under load, seconds of libtorch teardown at exit; the
nodes that only move messages must not pay for it (``ros/conversions.py`` imports the
torch-backed types for annotations only).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.ros

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("module", ["recorder_node", "replay_node"])
def test_message_only_nodes_do_not_load_torch(module: str, ros_env: dict[str, str]) -> None:
    code = (
        f"import sys, revqom_nodes.ros.{module}; "
        "print(sorted(m for m in ('torch', 'spconv') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=ros_env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
