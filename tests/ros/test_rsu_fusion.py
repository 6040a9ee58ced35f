"""A roadside unit without ROS (``revqom rsu``, Cyclone DDS) fused by the rclpy fusion node.

Two runs of one small scenario (tiny model, 3 synthetic frames, sliced and signed, enforced) on
loopback: the launch file as it is (the infrastructure as an rclpy agent node), then the same
without that node and with ``revqom rsu`` playing the infrastructure's sweeps from the bag as
the replay's /clock reaches them, ROS blocked in its process (``tests.rsu.no_ros``). The fusion
node fuses the unit like any agent: every slice arrives, authentic, and the detections equal
the first run's.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

pytestmark = [pytest.mark.ros, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
FRAMES = 3
SLICE_BYTES = 200  # the tiny model's 1,024-byte PACKED map in 6 slices


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from revqom_nodes.data.bag import convert_to_bag
    from revqom_nodes.data.synthetic import SynthConfig, generate_dataset
    from revqom_nodes.scenario.keys import scenario_keys
    from tests.runtime.tiny_model import save_tiny_model

    base = tmp_path_factory.mktemp("rsu_scenario")
    save_tiny_model(base / "tiny.pt")
    config = SynthConfig(vehicle_beams=16, infrastructure_rings=40)
    generate_dataset(base / "dataset", FRAMES, 11, scenes=1, progress=False, config=config)
    convert_to_bag(base / "dataset", base / "bag", progress=False)
    keys = scenario_keys(base / "keys")
    return {"base": base, "model": base / "tiny.pt", "bag": base / "bag", "keys": keys}


def _run(scenario: dict[str, Path], out: Path, env: dict[str, str], *, rsu: bool) -> tuple[list[dict], str]:
    """The scenario launch to its end (with the unit in place of the infrastructure agent node
    when ``rsu``): the recorder's records and every process's output."""
    from revqom_nodes.launcher.file import parse_launch_file
    from revqom_nodes.launcher.runner import LaunchRunner

    arguments = {
        "bag": str(scenario["bag"]), "model": str(scenario["model"]), "rate": "0.25", "threads": "1",
        "device": "cpu", "encoding": "packed", "slice_bytes": str(SLICE_BYTES), "record": "true",
        "out_dir": str(out), "sync_wait_ms": "3000.0", "exit_delay": "5.0",
        "trust_dir": str(scenario["keys"]),
    }
    nodes = parse_launch_file(ROOT / "launch" / "scenario.launch.xml", arguments)
    unit = None
    if rsu:
        nodes = [n for n in nodes if (n.executable, n.namespace) != ("agent_node", "/infrastructure")]
        settings = {
            "model.path": str(scenario["model"]), "device": "cpu", "codec.encoding": "packed",
            "output.slice_bytes": SLICE_BYTES, "security.trust_dir": str(scenario["keys"]),
            "source.bag": str(scenario["bag"]), "source.clock": "ros",
        }
        out.mkdir(parents=True)
        (out / "rsu.yaml").write_text(yaml.safe_dump(settings))
        unit = subprocess.Popen(
            [sys.executable, "-m", "tests.rsu.no_ros", "rsu", "--config", str(out / "rsu.yaml")],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
    assert sum(n.executable == "agent_node" for n in nodes) == (1 if rsu else 2)
    log = io.StringIO()
    runner = LaunchRunner(nodes, stdout=log, stderr=log)
    try:
        runner.start()
        status = runner.spin()
    finally:
        runner.shutdown()
        if unit is not None and unit.poll() is None:
            try:
                unit.wait(timeout=30)
            except subprocess.TimeoutExpired:
                unit.kill()
    output = log.getvalue() + ("" if unit is None else "\n--- revqom rsu ---\n" + unit.communicate()[0])
    assert status == 0 and set(runner.returncodes.values()) == {0}, output[-4000:]
    assert unit is None or unit.returncode == 0, output[-4000:]
    return [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()], output


def test_a_cyclone_dds_roadside_unit_is_fused_like_the_ros_agent(scenario, ros_env) -> None:
    ros_records, _ = _run(scenario, scenario["base"] / "ros", ros_env, rsu=False)
    rsu_records, output = _run(scenario, scenario["base"] / "rsu", ros_env, rsu=True)

    def by_stamp(records: list[dict], kind: str) -> dict[int, dict]:
        return {r["stamp_ns"]: r for r in records if r["kind"] == kind}

    expected, fused = by_stamp(ros_records, "detections"), by_stamp(rsu_records, "detections")
    assert len(expected) == FRAMES and sorted(fused) == sorted(expected), output[-4000:]
    assert "playing anyway" not in output  # the replay saw the unit's Cyclone writer in the ROS graph
    for stamp, live in fused.items():
        assert live["fused_agent_ids"] == expected[stamp]["fused_agent_ids"] == ["vehicle", "infrastructure"]
        assert len(live["scores"]) == len(expected[stamp]["scores"]) > 0
        np.testing.assert_allclose(live["boxes"], expected[stamp]["boxes"], atol=1e-5)
        np.testing.assert_allclose(live["scores"], expected[stamp]["scores"], atol=1e-5)

    def infrastructure_slices(records: list[dict]) -> list[tuple]:
        return sorted((r["stamp_ns"], r["slice_index"], r["payload_bytes"]) for r in records
                      if r["kind"] == "encoded_bev" and r["agent_id"] == "infrastructure")

    assert infrastructure_slices(rsu_records) == infrastructure_slices(ros_records)  # the recorder's view
    statuses = by_stamp(rsu_records, "fusion_status")
    assert len(statuses) == FRAMES
    unauthentic = {"unsigned", "bad_signature", "unknown_signer", "expired", "clock_skew", "replayed"}
    for status in statuses.values():
        assert status["cells_received_fraction"] == [1.0, 1.0]
        assert not any(status["rejected"].get(reason, 0) for reason in unauthentic), status["rejected"]
