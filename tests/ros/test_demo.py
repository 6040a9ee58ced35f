"""The README's first command: ``revqom demo`` end to end (needs the bundled model)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from revqom_nodes.scenario.demo import BUNDLED_MODEL

pytestmark = [pytest.mark.ros, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not (ROOT / BUNDLED_MODEL).is_file(), reason=f"no bundled model at {BUNDLED_MODEL} yet")
def test_demo_prints_the_summary_and_writes_metrics_and_pictures(
    tmp_path: Path, ros_env: dict[str, str]
) -> None:
    out = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "revqom_nodes.cli", "demo", "--out", str(out), "--frames", "6"],
        cwd=ROOT,
        env=ros_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "AP@0.5" in done.stdout and "latency ms" in done.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["frames"] == metrics["frames_with_detections_message"] == 6
    assert metrics["missing_frames"] == []
    assert set(metrics["ap"]) == {"0.3", "0.5", "0.7"}
    assert (out / "keys" / "agents" / "infrastructure.key.pem").is_file()  # signed, enforced
    unauthentic = ("unsigned", "bad_signature", "unknown_signer", "expired", "clock_skew", "replayed")
    assert not any(metrics["rejected"][reason] for reason in unauthentic), metrics["rejected"]
    assert metrics["bytes_per_agent_frame"]["entropy"] <= metrics["bytes_per_agent_frame"]["packed"]
    for stage in ("encode", "transport", "decode_fuse", "end_to_end"):
        assert metrics["latency_ms"][stage]["count"] > 0
    assert (out / "bev.gif").stat().st_size > 0 and (out / "bev_montage.png").stat().st_size > 0
    assert len(list((out / "bev").glob("frame_*.png"))) == 6
