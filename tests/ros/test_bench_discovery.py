"""``revqom bench discovery`` reduced to one and three agents: every agent's publisher is
matched by the receiver's subscription, and the JSON says how long it took."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def test_every_agent_is_discovered_and_timed(ros_env: dict[str, str]) -> None:
    command = [sys.executable, "-m", "revqom_nodes.cli", "bench", "discovery", "--repeats", "1"]
    command += ["--agents", "1,3"]
    done = subprocess.run(command, cwd=ROOT, env=ros_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["rmw"] == ros_env["RMW_IMPLEMENTATION"] and list(result["agents"]) == ["1", "3"]
    for row in result["agents"].values():
        discovery, every = row["discovery_ms"], row["all_matched_ms"]
        assert 0 <= discovery["p50"] <= discovery["p95"] <= discovery["max"] <= every["max"]
        assert row["start_ms"]["p50"] > 0 and row["repeats"] == 1
    command[-1] = "0"
    bad = subprocess.run(command, cwd=ROOT, env=ros_env, capture_output=True, text=True)
    assert bad.returncode != 0 and "--agents" in bad.stderr
