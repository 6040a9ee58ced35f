"""scenario.launch.xml as the runner reads it: the nodes, their parameters, the DDS profile."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from revqom_nodes.data.agents_launch import AGENTS_LAUNCH_FILE, agents_launch_xml
from revqom_nodes.data.errors import DatasetError
from revqom_nodes.launcher.file import parse_launch_file
from revqom_nodes.launcher.node import NodeSpec
from revqom_nodes.scenario.demo import BUNDLED_MODEL

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


def bag_with_agents(bag: Path, agents: list[tuple[str, str]], egos: list[str]) -> Path:
    """A bag folder holding only the agents launch file that ``revqom data to-bag`` writes."""
    bag.mkdir(parents=True, exist_ok=True)
    (bag / AGENTS_LAUNCH_FILE).write_text(agents_launch_xml(agents, egos), encoding="utf-8")
    return bag


ONE_PLUS_ONE = [("vehicle", "vehicle"), ("infrastructure", "infrastructure")]


@pytest.mark.parametrize("record", ["true", "false"])
def test_scenario_nodes_and_parameters(record: str, tmp_path: Path) -> None:
    bag = bag_with_agents(tmp_path / "bag", ONE_PLUS_ONE, ["vehicle"])
    nodes = {
        spec.label: spec
        for spec in parse_launch_file(
            LAUNCH, {"bag": str(bag), "record": record, "encoding": "entropy", "rate": "0.5"}
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
    assert vehicle["model.path"] == str(ROOT / BUNDLED_MODEL)
    fusion = inline(nodes["fusion/fusion"])
    assert fusion["fusion.agent_topics"] == ["/vehicle/encoded_bev", "/infrastructure/encoded_bev"]
    assert fusion["fusion.max_age_ms"] == ""  # not given: the node keeps its parameter file's value
    replay = inline(nodes["replay"])
    assert (replay["bag.path"], replay["replay.rate"], replay["replay.loop"]) == (str(bag), 0.5, "")
    assert replay["replay.wait_for_publishers"] == [
        "/vehicle/encoded_bev",
        "/infrastructure/encoded_bev",
        "/fusion/detections",
    ]
    assert replay["replay.wait_for_subscribers"] == (["/fusion/detections"] if record == "true" else "")
    if record == "true":  # the recorder's topics are its parameter file's defaults in the 1 + 1 case
        recorder = inline(nodes["recorder"])
        defaults = yaml.safe_load((ROOT / "config" / "recorder.param.yaml").read_text())
        defaults = defaults["/**"]["ros__parameters"]
        assert {k: v for k, v in recorder.items() if k.startswith("topics.")} == {
            k: v for k, v in defaults.items() if k.startswith("topics.")
        }


def test_partner_delay_and_pose_noise_reach_the_replay(tmp_path: Path) -> None:
    bag = bag_with_agents(tmp_path / "bag", ONE_PLUS_ONE, ["vehicle"])
    names = ("replay.partner_delay_ms", "replay.pose_noise", "replay.noise_seed")

    def replay(**given: str) -> list:
        spec = next(n for n in parse_launch_file(LAUNCH, {"bag": str(bag), **given}) if n.label == "replay")
        return [inline(spec)[name] for name in names]

    assert replay(partner_delay_ms="300", pose_noise="[0.2, 0.4]", noise_seed="3") == [300, [0.2, 0.4], 3]
    assert replay() == ["", "", ""]  # not given: the parameter file's values


def test_one_agent_node_per_agent_and_one_fusion_node_per_ego(tmp_path: Path) -> None:
    """3 vehicles + 2 roadside units, vehicles 0 and 2 egos: five agents, two fusion nodes each in
    its namespace with its own ego first, and the replay and the recorder on every topic."""
    agents = [("vehicle", "vehicle"), ("vehicle_1", "vehicle"), ("vehicle_2", "vehicle"),
              ("infrastructure", "infrastructure"), ("infrastructure_1", "infrastructure")]
    bag = bag_with_agents(tmp_path / "bag", agents, ["vehicle", "vehicle_2"])
    nodes = {spec.label: spec for spec in parse_launch_file(LAUNCH, {"bag": str(bag), "record": "true"})}
    assert set(nodes) == {f"{a}/agent" for a, _ in agents} | {"fusion/fusion", "fusion_2/fusion", "recorder",
                                                               "replay"}
    for agent_id, role in agents:
        spec = nodes[f"{agent_id}/agent"]
        assert spec.namespace == f"/{agent_id}"
        assert (inline(spec)["agent.id"], inline(spec)["agent.role"]) == (agent_id, role)
    ids = [a for a, _ in agents]
    for label, ego in (("fusion/fusion", "vehicle"), ("fusion_2/fusion", "vehicle_2")):
        fusion = inline(nodes[label])
        assert fusion["fusion.ego_agent_id"] == ego
        assert fusion["fusion.agent_ids"] == [ego, *(a for a in ids if a != ego)]
        assert fusion["fusion.agent_topics"] == [f"/{a}/encoded_bev" for a in fusion["fusion.agent_ids"]]
    detections = ["/fusion/detections", "/fusion_2/detections"]
    replay, recorder = inline(nodes["replay"]), inline(nodes["recorder"])
    assert replay["replay.wait_for_publishers"] == [f"/{a}/encoded_bev" for a in ids] + detections
    assert replay["replay.wait_for_subscribers"] == detections
    assert recorder["topics.detections"] == detections
    assert recorder["topics.fusion_status"] == ["/fusion/fusion_status", "/fusion_2/fusion_status"]
    assert recorder["topics.clouds"] == [f"/{a}/lidar/points" for a in ids]


def test_an_ego_must_be_a_vehicle_of_the_scenario() -> None:
    with pytest.raises(DatasetError, match="not a vehicle"):
        agents_launch_xml(ONE_PLUS_ONE, ["infrastructure"])
    with pytest.raises(DatasetError, match="not a vehicle"):
        agents_launch_xml(ONE_PLUS_ONE, ["vehicle_3"])
    with pytest.raises(DatasetError, match="distinct"):
        agents_launch_xml(ONE_PLUS_ONE, ["vehicle", "vehicle"])


def test_an_absent_agent_runs_no_node_and_is_still_expected(tmp_path: Path) -> None:
    """``revqom demo --absent infrastructure``: no agent node for it, the replay does not wait for
    its maps, the fusion node still subscribes to them; an ego or a stranger cannot be absent."""
    bag = tmp_path / "bag"
    bag.mkdir()
    (bag / AGENTS_LAUNCH_FILE).write_text(agents_launch_xml(ONE_PLUS_ONE, ["vehicle"], ["infrastructure"]))
    nodes = {spec.label: spec for spec in parse_launch_file(LAUNCH, {"bag": str(bag)})}
    assert set(nodes) == {"vehicle/agent", "fusion/fusion", "replay"}
    assert inline(nodes["fusion/fusion"])["fusion.agent_ids"] == ["vehicle", "infrastructure"]
    awaited = inline(nodes["replay"])["replay.wait_for_publishers"]
    assert awaited == ["/vehicle/encoded_bev", "/fusion/detections"]
    for absent in (["vehicle"], ["infrastructure_1"]):
        with pytest.raises(DatasetError, match="absent"):
            agents_launch_xml(ONE_PLUS_ONE, ["vehicle"], absent)


def test_every_parameter_file_uses_the_ros_parameters_form() -> None:
    for path in sorted((ROOT / "config").glob("*.param.yaml")):
        document = yaml.safe_load(path.read_text())
        assert list(document) == ["/**"] and list(document["/**"]) == ["ros__parameters"], path
