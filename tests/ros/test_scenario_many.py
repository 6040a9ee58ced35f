"""Many agents end to end: ``revqom demo --vehicles 3 --rsus 2 --egos vehicle,vehicle_1``.

One run (bundled model, 3 synthetic frames, signed and enforced): five agent nodes (one per
agent) and one fusion node per ego start from the generated agents launch file; each ego's live
detections (told apart by their LiDAR frame) equal ``revqom eval``'s for that ego
(``DairV2XReader.ego_frame``), every frame fused with all four partners, and the demo's per-ego
AP is eval's. (The random tiny model
of the other scenario tests scores most cells alike, so which of them a run keeps is arbitrary:
a trained model is needed to compare many-agent runs box for box.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from revqom_nodes.scenario.demo import BUNDLED_MODEL

pytestmark = [pytest.mark.ros, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
FRAMES = 3
EGOS = ["vehicle", "vehicle_1"]


@pytest.mark.skipif(not (ROOT / BUNDLED_MODEL).is_file(), reason=f"no bundled model at {BUNDLED_MODEL}")
def test_two_egos_each_match_eval(tmp_path: Path, ros_env: dict[str, str]) -> None:
    import torch

    from revqom_nodes.data.bag import lidar_frame
    from revqom_nodes.data.dairv2x import DairV2XReader
    from revqom_nodes.evaluation.runner import evaluate_model
    from revqom_nodes.model_file import load_model

    out = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "revqom_nodes.cli", "demo", "--out", str(out), "--frames", str(FRAMES),
         "--vehicles", "3", "--rsus", "2", "--egos", ",".join(EGOS)],
        cwd=ROOT, env=ros_env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert all(f"ego {ego}:" in done.stdout for ego in EGOS)
    metrics = json.loads((out / "metrics.json").read_text())
    agents = ["vehicle", "vehicle_1", "vehicle_2", "infrastructure", "infrastructure_1"]
    assert metrics["agents"] == agents and list(metrics["egos"]) == EGOS
    records = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]

    torch.set_num_threads(1)  # as the nodes run
    reader = DairV2XReader(out / "dataset", "all")
    loaded = load_model(ROOT / BUNDLED_MODEL, "cpu")
    for ego in EGOS:
        frames = [reader.ego_frame(i, ego) for i in range(len(reader))]
        live = {r["stamp_ns"]: r for r in records
                if r["kind"] == "detections" and r["frame_id"] == lidar_frame(ego)}
        assert sorted(live) == sorted(f.ego.timestamp_us * 1000 for f in frames), (ego, done.stdout[-2000:])
        fused = {stamp: r["fused_agent_ids"] for stamp, r in live.items()}  # what a failure shows
        assert all(ids == [a.agent_id for a in frames[0].agents] for ids in fused.values()), (ego, fused)
        assert len(frames[0].agents) == len(agents)
        offline = evaluate_model(loaded, frames, name="bundled", progress=False)
        for frame, expected in zip(frames, offline["per_frame"], strict=True):
            record = live[frame.ego.timestamp_us * 1000]
            expected_pred = np.asarray(expected["pred"], np.float64).reshape(-1, 8)
            assert len(record["scores"]) == len(expected_pred) > 0
            np.testing.assert_allclose(np.asarray(record["boxes"]), expected_pred[:, :7], atol=1e-3)
            np.testing.assert_allclose(record["scores"], expected_pred[:, 7], atol=1e-4)
        assert metrics["egos"][ego]["ap"] == pytest.approx(offline["ap"], abs=1e-6), ego
