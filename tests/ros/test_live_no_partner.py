"""Live with the infrastructure's node down (issue 14): ``revqom demo --absent infrastructure``
with the bundled model, which has an ego-only head. Every ego frame fuses the ego alone (FusionStatus: the
infrastructure not fused, ``no_message``), the node logs that the ego-only head detects, and
every frame's live detections equal ``revqom eval``'s with no partner (the ego's map alone, as
``ap_by_partners["0"]`` counts it), box for box.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from revqom_nodes.scenario.demo import BUNDLED_MODEL

pytestmark = [pytest.mark.ros, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / BUNDLED_MODEL
FRAMES = 4


@pytest.mark.skipif(not MODEL.is_file(), reason=f"no model at {MODEL}")
def test_absent_infrastructure_equals_eval_alone(tmp_path: Path, ros_env: dict[str, str]) -> None:
    import torch

    from revqom_nodes.data.dairv2x import DairV2XReader
    from revqom_nodes.evaluation.runner import evaluate_model
    from revqom_nodes.model_file import load_model

    out = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "revqom_nodes.cli", "demo", "--out", str(out), "--frames", str(FRAMES),
         "--absent", "infrastructure"],
        cwd=ROOT, env=ros_env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    records = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    live = {r["stamp_ns"]: r for r in records if r["kind"] == "detections"}
    statuses = [r for r in records if r["kind"] == "fusion_status"]
    assert len(live) == len(statuses) == FRAMES
    assert all(s["fused"] == [True, False] and s["not_fused_reason"] == ["", "no_message"] for s in statuses)
    assert all(s["ego_head"] for s in statuses)
    assert "no partner fused: the ego-only head detects" in (out / "launch.log").read_text()

    torch.set_num_threads(1)  # as the nodes run
    reader = DairV2XReader(out / "dataset", "all")
    alone = [replace(reader[i], agents=reader[i].agents[:1]) for i in range(len(reader))]
    offline = evaluate_model(load_model(MODEL, "cpu"), alone, name="alone", progress=False)
    for frame, expected in zip(alone, offline["per_frame"], strict=True):
        record = live[frame.ego.timestamp_us * 1000]
        assert record["fused_agent_ids"] == ["vehicle"]
        expected_pred = np.asarray(expected["pred"], np.float64).reshape(-1, 8)
        assert len(record["scores"]) == len(expected_pred) > 0
        np.testing.assert_allclose(np.asarray(record["boxes"]), expected_pred[:, :7], atol=1e-3)
        np.testing.assert_allclose(record["scores"], expected_pred[:, 7], atol=1e-4)
