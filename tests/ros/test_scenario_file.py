"""scenario.launch.xml as the runner reads it: the nodes, their parameters, the DDS profile."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from revqom_nodes.launcher.file import parse_launch_file
from revqom_nodes.launcher.node import NodeSpec

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = ROOT / "launch" / "scenario.launch.xml"


def inline(spec: NodeSpec) -> dict:
    merged: dict = {}
    for parameters in spec.parameters:
        merged.update(
            yaml.safe_load(parameters.read_text())["/**"]["ros__parameters"]
            if isinstance(parameters, Path)
            else parameters
        )
    return merged


@pytest.mark.parametrize("record", ["true", "false"])
def test_scenario_nodes_and_parameters(record: str) -> None:
    nodes = {
        spec.label: spec
        for spec in parse_launch_file(
            LAUNCH, {"bag": "/data/bag", "record": record, "encoding": "entropy", "rate": "0.5"}
        )
    }
    expected = {"vehicle/agent", "infrastructure/agent", "fusion/fusion", "replay"} | (
        {"recorder"} if record == "true" else set()
    )
    assert set(nodes) == expected
    assert nodes["replay"].on_exit_shutdown
    for spec in nodes.values():
        assert spec.env["FASTDDS_DEFAULT_PROFILES_FILE"] == str(ROOT / "config" / "fastdds.xml")
    vehicle, infra = inline(nodes["vehicle/agent"]), inline(nodes["infrastructure/agent"])
    assert (vehicle["agent.id"], infra["agent.id"], infra["agent.role"]) == (
        "vehicle",
        "infrastructure",
        "infrastructure",
    )
    assert vehicle["codec.encoding"] == infra["codec.encoding"] == "entropy"
    assert vehicle["model.path"] == str(ROOT / "models" / "synthetic_gpu_k64_ctx.pt")
    fusion = inline(nodes["fusion/fusion"])
    assert fusion["fusion.agent_topics"] == ["/vehicle/encoded_bev", "/infrastructure/encoded_bev"]
    assert fusion["fusion.max_age_ms"] == ""  # not given: the node keeps its parameter file's value
    replay = inline(nodes["replay"])
    assert (replay["bag.path"], replay["replay.rate"], replay["replay.loop"]) == ("/data/bag", 0.5, "")
    assert replay["replay.wait_for_publishers"] == [
        "/vehicle/encoded_bev",
        "/infrastructure/encoded_bev",
        "/fusion/detections",
    ]
    assert replay["replay.wait_for_subscribers"] == ("/fusion/detections" if record == "true" else "")


def test_every_parameter_file_uses_the_ros_parameters_form() -> None:
    for path in sorted((ROOT / "config").glob("*.param.yaml")):
        document = yaml.safe_load(path.read_text())
        assert list(document) == ["/**"] and list(document["/**"]) == ["ros__parameters"], path
