"""Live equals offline under V2X conditions: ``revqom demo --pose-noise`` / ``--partner-delay-ms``.

Pose noise (the replay noises the infrastructure's published poses): every frame's live
detections equal ``revqom eval --pose-noise --noise-seed`` box for box, with the same settings.

Delay (the replay publishes the infrastructure's clouds and poses 300 ms late, the fusion node
waits 200 ms of bag time for it): which partner sweep an ego frame meets depends on the machine's
timing (the newest one held when the wait ends), so the test reads it from FusionStatus (the
partner's age) and checks that every frame fused with a whole partner map equals the offline
evaluation of that ego frame with that partner sweep (``PerturbedFrames`` with the live pairs),
box for box; the ages and AP are docs/RESULTS.md's business ("Live partner delay and pose noise").
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
NO_MODEL = not (ROOT / BUNDLED_MODEL).is_file()
RATE = 0.25  # the demo's 1 + 1 rate


def _demo(out: Path, env: dict[str, str], *options: str) -> list[dict]:
    done = subprocess.run(
        [sys.executable, "-m", "revqom_nodes.cli", "demo", "--out", str(out), "--rate", str(RATE), *options],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]


def _assert_equal_boxes(record: dict, expected: dict) -> None:
    expected_pred = np.asarray(expected["pred"], np.float64).reshape(-1, 8)
    assert len(record["scores"]) == len(expected_pred) > 0
    np.testing.assert_allclose(np.asarray(record["boxes"]), expected_pred[:, :7], atol=1e-3)
    np.testing.assert_allclose(record["scores"], expected_pred[:, 7], atol=1e-4)


@pytest.mark.skipif(NO_MODEL, reason=f"no bundled model at {BUNDLED_MODEL}")
def test_live_pose_noise_equals_eval(tmp_path: Path, ros_env: dict[str, str]) -> None:
    from revqom_nodes.cli import main
    from revqom_nodes.data.dairv2x import DairV2XReader

    out = tmp_path / "demo"
    records = _demo(out, ros_env, "--frames", "4", "--pose-noise", "0.4,0.4", "--noise-seed", "3")
    live = {r["stamp_ns"]: r for r in records if r["kind"] == "detections"}
    offline = tmp_path / "eval.json"
    assert main(["eval", "--model", str(ROOT / BUNDLED_MODEL), "--data", str(out / "dataset"),
                 "--split", "all", "--device", "cpu", "--threads", "1", "--pose-noise", "0.4,0.4",
                 "--noise-seed", "3", "--no-progress", "--out", str(offline)]) == 0
    result = json.loads(offline.read_text())
    assert len(result["per_frame"]) == len(live) == 4
    reader = DairV2XReader(out / "dataset", "all")
    for i, expected in enumerate(result["per_frame"]):
        record = live[reader[i].ego.timestamp_us * 1000]
        assert record["fused_agent_ids"] == ["vehicle", "infrastructure"]
        _assert_equal_boxes(record, expected)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["ap"] == pytest.approx(result["ap"], abs=1e-6)
    assert metrics["partner_perturbation"]["pose_noise"] == [0.4, 0.4]


@pytest.mark.skipif(NO_MODEL, reason=f"no bundled model at {BUNDLED_MODEL}")
def test_live_delay_fuses_the_partner_sweep_it_holds_as_offline(
    tmp_path: Path, ros_env: dict[str, str]
) -> None:
    import torch

    from revqom_nodes.data.dairv2x import DairV2XReader
    from revqom_nodes.data.perturbation import PartnerSchedule
    from revqom_nodes.defaults import node_defaults
    from revqom_nodes.evaluation.robustness import PartnerPerturbation, PerturbedFrames
    from revqom_nodes.evaluation.runner import evaluate_model
    from revqom_nodes.model_file import load_model

    out = tmp_path / "demo"
    wait_ms = node_defaults("fusion")["fusion.sync_wait_ms"] / RATE  # 200 ms of bag time
    records = _demo(out, ros_env, "--frames", "8", "--partner-delay-ms", "300",
                    "--sync-wait-ms", str(wait_ms))
    reader = DairV2XReader(out / "dataset", "all")
    stamps = [reader.timestamps_us(i) for i in range(len(reader))]
    partner_frame = {infrastructure_us: j for j, (_, infrastructure_us) in enumerate(stamps)}
    detections = {r["stamp_ns"]: r for r in records if r["kind"] == "detections"}
    statuses = {r["stamp_ns"]: r for r in records if r["kind"] == "fusion_status"}
    assert sorted(detections) == sorted(v * 1000 for v, _ in stamps)  # every ego frame published

    pairs, ages_ms = [], []
    max_age_ms = node_defaults("fusion")["fusion.max_age_ms"]
    for i, (vehicle_us, _) in enumerate(stamps):
        status = statuses[vehicle_us * 1000]
        assert status["agent_ids"] == ["vehicle", "infrastructure"]
        if not status["fused"][1]:
            assert status["not_fused_reason"][1] in {"no_message", "stale"}
            continue
        age_ms = status["message_age_ms"][1]
        assert age_ms <= max_age_ms
        ages_ms.append(age_ms)
        if status["cells_received_fraction"] == [1.0, 1.0]:  # both maps whole: comparable offline
            pairs.append((i, partner_frame[vehicle_us - round(age_ms * 1000)]))
    assert pairs, f"no frame fused with a whole partner map (ages {ages_ms})"

    torch.set_num_threads(1)  # as the nodes run
    loaded = load_model(ROOT / BUNDLED_MODEL, "cpu")
    schedule = PartnerSchedule(pairs, len(stamps) - len(pairs), [])
    frames = PerturbedFrames([reader[i] for i in range(len(reader))], schedule, PartnerPerturbation())
    offline = evaluate_model(loaded, frames, name="bundled", progress=False)
    for (i, _), expected in zip(pairs, offline["per_frame"], strict=True):
        _assert_equal_boxes(detections[stamps[i][0] * 1000], expected)
