"""The scenario launch file, run by the project's launch runner, end to end with real DDS.

One run (tiny model, 4 synthetic frames) checks: the launch ends with the bag (status 0),
the fusion node publishes detections for every ego frame, fused with the infrastructure,
equal to ``revqom eval``'s on the same frames; packed payloads have the formula's size;
no node process is left after shutdown.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
FRAMES = 4


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from revqom_nodes.data.bag import convert_to_bag
    from revqom_nodes.data.synthetic import SynthConfig, generate_dataset
    from revqom_nodes.scenario.keys import scenario_keys
    from tests.runtime.tiny_model import save_tiny_model

    base = tmp_path_factory.mktemp("scenario")
    save_tiny_model(base / "tiny.pt")
    generate_dataset(
        base / "dataset",
        FRAMES,
        11,
        scenes=1,
        progress=False,
        config=SynthConfig(vehicle_beams=16, infrastructure_rings=40),
    )
    convert_to_bag(base / "dataset", base / "bag", progress=False)
    return {
        "base": base,
        "model": base / "tiny.pt",
        "dataset": base / "dataset",
        "bag": base / "bag",
        "keys": scenario_keys(base / "keys"),
    }


def _node_processes() -> list:
    import psutil

    found = []
    for process in psutil.Process().children(recursive=True):
        try:
            if any("revqom_nodes.ros." in part for part in process.cmdline()):
                found.append(process)
        except psutil.NoSuchProcess:
            continue
    return found


def _run_scenario(scenario: dict[str, Path], out: Path, **extra: str) -> list[dict]:
    """Launch the scenario (tiny model, packed, recording to ``out``) to its end; its records."""
    from revqom_nodes.launcher.file import parse_launch_file
    from revqom_nodes.launcher.runner import LaunchRunner

    arguments = {
        "bag": str(scenario["bag"]),
        "model": str(scenario["model"]),
        "rate": "0.25",
        "threads": "1",
        "device": "cpu",
        "encoding": "packed",
        "record": "true",
        "out_dir": str(out),
        "sync_wait_ms": "3000.0",
        "exit_delay": "5.0",
        "trust_dir": str(scenario["keys"]),  # signed and enforced, as the demo runs
        **extra,
    }
    nodes = parse_launch_file(ROOT / "launch" / "scenario.launch.xml", arguments)
    assert sorted(n.executable for n in nodes) == [
        "agent_node",
        "agent_node",
        "fusion_node",
        "recorder_node",
        "replay_node",
    ]
    log = io.StringIO()
    runner = LaunchRunner(nodes, stdout=log, stderr=log)
    runner.start()
    try:
        status = runner.spin()
    finally:
        runner.shutdown()
    assert status == 0, log.getvalue()[-4000:]
    assert runner.shutdown_reason == "replay exited (on_exit=shutdown)"
    assert set(runner.returncodes.values()) == {0}
    assert _node_processes() == []
    return [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]


def _assert_detections_match_eval(records: list[dict], scenario: dict[str, Path]):
    """Every ego frame's live detections equal ``revqom eval``'s; returns the loaded model."""
    from revqom_nodes.data.dairv2x import DairV2XReader
    from revqom_nodes.evaluation.runner import evaluate_model
    from revqom_nodes.model_file import load_model

    detections = {r["stamp_ns"]: r for r in records if r["kind"] == "detections"}
    reader = DairV2XReader(scenario["dataset"], "all")
    frames = [reader[i] for i in range(len(reader))]
    assert sorted(detections) == sorted(f.ego.timestamp_us * 1000 for f in frames)
    assert all(r["fused_agent_ids"] == ["vehicle", "infrastructure"] for r in detections.values())
    assert all(r["frame_id"] == "vehicle_lidar" for r in detections.values())

    loaded = load_model(scenario["model"], "cpu")
    offline = evaluate_model(loaded, frames, name="tiny", progress=False)
    for frame, expected in zip(frames, offline["per_frame"], strict=True):
        live = detections[frame.ego.timestamp_us * 1000]
        expected_pred = np.asarray(expected["pred"], np.float64).reshape(-1, 8)
        assert len(live["scores"]) == len(expected_pred) > 0
        np.testing.assert_allclose(np.asarray(live["boxes"]), expected_pred[:, :7], atol=1e-3)
        np.testing.assert_allclose(live["scores"], expected_pred[:, 7], atol=1e-4)
    return loaded


def test_scenario_runs_to_the_end_of_the_bag_and_matches_eval(scenario, ros_env) -> None:
    from revqom_nodes.codec.wire import packed_size

    records = _run_scenario(scenario, scenario["base"] / "out", slice_bytes="0")  # one message per map
    loaded = _assert_detections_match_eval(records, scenario)
    height, width = loaded.config.grid.bev_shape
    codec = loaded.config.codec
    expected_bytes = packed_size(height, width, codec.num_quantizers, codec.codebook_size)
    encoded = [r for r in records if r["kind"] == "encoded_bev"]
    assert len(encoded) == 2 * FRAMES
    assert {r["payload_bytes"] for r in encoded} == {expected_bytes}
    statuses = [r for r in records if r["kind"] == "agent_status"]
    assert {r["payload_bytes"] for r in statuses} == {expected_bytes}
    assert all(r["frames_failed"] == 0 for r in statuses)


def test_sliced_scenario_matches_the_whole_map_run_with_every_cell(scenario, ros_env) -> None:
    """``slice_bytes``: the agents send every map in slices; on loopback nothing is lost, so the
    detections equal ``revqom eval``'s (which the monolithic run above equals too) and the
    status reports every cell received. The tiny model's map is 1,024 B PACKED, so the budget
    is 200 B (6 slices per map; 1,200 B would hold it whole)."""
    import threading

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from revqom.msg import FusionStatus

    from revqom_nodes.codec.wire import packed_size
    from revqom_nodes.ros.qos import RESULT_QOS

    slice_bytes = 200
    statuses: list[FusionStatus] = []
    rclpy.init()
    listener = Node("fusion_status_listener")
    listener.create_subscription(FusionStatus, "/fusion/fusion_status", statuses.append, RESULT_QOS)
    executor = SingleThreadedExecutor()
    executor.add_node(listener)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        records = _run_scenario(scenario, scenario["base"] / "out_sliced", slice_bytes=str(slice_bytes))
    finally:
        executor.shutdown()
        listener.destroy_node()
        rclpy.try_shutdown()
        spinner.join(timeout=10)
    loaded = _assert_detections_match_eval(records, scenario)

    height, width = loaded.config.grid.bev_shape
    codec = loaded.config.codec
    whole = packed_size(height, width, codec.num_quantizers, codec.codebook_size)
    per_map = -(-whole // slice_bytes)
    encoded = [r for r in records if r["kind"] == "encoded_bev"]
    assert len(encoded) == 2 * FRAMES * per_map
    assert max(r["payload_bytes"] for r in encoded) <= slice_bytes
    agent_statuses = [r for r in records if r["kind"] == "agent_status"]
    assert {r["payload_bytes"] for r in agent_statuses} == {whole}  # the frame's total
    assert len(statuses) == FRAMES
    assert all(list(s.cells_received_fraction) == [1.0, 1.0] for s in statuses)
    assert all(
        dict(zip(s.rejected_reasons, s.rejected_counts, strict=True))["bad_slice"] == 0 for s in statuses
    )
    unauthentic = {"unsigned", "bad_signature", "unknown_signer", "expired", "clock_skew", "replayed"}
    for s in statuses:  # signed and enforced: every slice authenticated
        counts = dict(zip(s.rejected_reasons, s.rejected_counts, strict=True))
        assert not any(counts[reason] for reason in unauthentic), counts


def test_a_looping_replay_keeps_time_going_and_every_pass_is_fused(scenario, ros_env) -> None:
    """``loop:=true``: each pass is stamped one bag length plus one period after the previous
    one, so the fusion node fuses every pass's frames (none rejected as out of order)."""
    import time

    from revqom_nodes.launcher.file import parse_launch_file
    from revqom_nodes.launcher.runner import LaunchRunner
    from revqom_nodes.runtime.playback import bag_info, iter_bag

    out = scenario["base"] / "out_loop"
    arguments = {
        "bag": str(scenario["bag"]), "model": str(scenario["model"]), "rate": "0.5", "loop": "true",
        "threads": "1", "device": "cpu", "record": "true", "out_dir": str(out), "sync_wait_ms": "3000.0",
        "trust_dir": str(scenario["keys"]),
    }
    played = [m.bag_ns for m in iter_bag(scenario["bag"])]
    offset_ns = played[-1] - played[0] + bag_info(scenario["bag"]).period_ns  # one bag length and period
    truth = [m.bag_ns for m in iter_bag(scenario["bag"]) if m.topic == "/ground_truth/boxes"]
    passes = 3
    wanted = {stamp + k * offset_ns for stamp in truth for k in range(passes)}

    def detections() -> list[dict]:
        path = out / "events.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        return [r for r in map(json.loads, lines) if r["kind"] == "detections"]

    log = io.StringIO()
    nodes = parse_launch_file(ROOT / "launch" / "scenario.launch.xml", arguments)
    runner = LaunchRunner(nodes, stdout=log, stderr=log)
    runner.start()
    try:
        deadline = time.monotonic() + 240
        while not wanted <= {r["stamp_ns"] for r in detections()} and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        runner.shutdown()
    records = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    fused = {r["stamp_ns"]: r for r in records if r["kind"] == "detections"}
    assert wanted <= set(fused), f"missing ego frames {sorted(wanted - set(fused))}\n{log.getvalue()[-3000:]}"
    assert all(fused[s]["fused_agent_ids"] == ["vehicle", "infrastructure"] for s in wanted)
    stamps = [r["stamp_ns"] for r in records if r["kind"] == "detections"]
    assert stamps == sorted(stamps)
    statuses = [r for r in records if r["kind"] == "fusion_status"]
    assert statuses[-1]["rejected"].get("out_of_order", 0) == 0
    assert "Traceback" not in log.getvalue() and "RCLError" not in log.getvalue()
