"""Each node parameter has one home: its ``config/<node>.param.yaml`` (value and comment).

The nodes declare exactly the parameters of their file and read each of them (nothing extra,
no default restated in code); the launch file's arguments default to '' ("not set"), so the
files' values hold unless a user sets one; '' reads as the file's value.
"""

from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from revqom_nodes.defaults import NODES, node_defaults, node_parameters, parameter_file

ROOT = Path(__file__).resolve().parents[2]
ROS = ROOT / "revqom_nodes" / "ros"
LAUNCH = ROOT / "launch" / "scenario.launch.xml"
README = ROOT / "README.md"


def _read_keys(module: Path) -> set[str]:
    """The string keys of ``params[...]`` in a node module."""
    keys = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if (
            isinstance(node, ast.Subscript)
            and isinstance(node.value, ast.Name)
            and node.value.id == "params"
            and isinstance(node.slice, ast.Constant)
        ):
            keys.add(node.slice.value)
    return keys


@pytest.mark.parametrize("node", NODES)
def test_every_parameter_is_documented_in_its_file(node: str) -> None:
    parameters = node_parameters(node)
    assert parameters, parameter_file(node)
    for name, parameter in parameters.items():
        assert parameter.description, f"{parameter_file(node)}: {name} has no comment"


@pytest.mark.parametrize("node", NODES)
def test_the_node_reads_exactly_its_files_parameters(node: str) -> None:
    module = ROS / f"{node}_node.py"
    source = module.read_text()
    assert f'declare_parameters(self, "{node}")' in source
    assert _read_keys(module) == set(node_parameters(node)), f"{module.name} vs {parameter_file(node).name}"


def test_no_node_declares_a_parameter_of_its_own() -> None:
    for module in ROS.glob("*.py"):
        if module.name != "parameters.py":
            assert "declare_parameter(" not in module.read_text(), module.name


def test_launch_arguments_do_not_restate_the_parameter_files() -> None:
    root = ET.parse(LAUNCH).getroot()
    defaults = {arg.get("name"): arg.get("default") for arg in root.iter("arg")}
    file_defaults = {name: p.default for n in NODES for name, p in node_parameters(n).items()}
    file_parameters = {name for name, default in file_defaults.items() if default != ""}  # "": launch sets it
    included = [ET.parse(path).getroot() for path in sorted(LAUNCH.parent.glob("*.launch.xml"))]
    params = [param for launch in included for param in launch.iter("param")]
    assert {param.get("name") for param in params} >= {"agent.id", "fusion.agent_ids", "bag.path"}
    for param in params:
        name, value = param.get("name"), param.get("value", "")
        if name in file_parameters and value.startswith("$(var ") and value.endswith(")"):
            argument = value[len("$(var ") : -1]
            if argument in defaults and defaults[argument] is not None:
                assert defaults[argument] == "''", f"launch argument {argument} restates {name}"


def _readme_table(node: str) -> dict[str, object]:
    """Parameter -> default as README.md's table for ``node`` shows it."""
    section = README.read_text().split(f"#### {node}_node", 1)[1].split("\n### ", 1)[0].split("\n#### ", 1)[0]
    rows = re.findall(r"^\| `([\w.]+)` \| [^|]+ \| ([^|]+) \|", section, flags=re.MULTILINE)
    table = {}
    for name, cell in rows:
        cell = re.sub(r"\s*\(.*\)$", "", cell.strip())  # "[] (every topic)", '"" (required)'
        table[name] = "" if cell == '""' else yaml.safe_load(cell)
    return table


@pytest.mark.parametrize("node", NODES)
def test_the_readme_tables_show_the_parameter_files(node: str) -> None:
    assert _readme_table(node) == dict(node_defaults(node))


def test_offline_tools_read_the_agent_slice_budget() -> None:
    assert node_defaults("agent")["output.slice_bytes"] == 1000
    assert node_defaults("fusion")["output.display_min_score"] == 0.3
    assert node_defaults("agent")["torch.num_threads"] == node_defaults("fusion")["torch.num_threads"] == 1


@pytest.mark.ros
def test_an_empty_string_means_not_set(ros_env) -> None:
    rclpy = pytest.importorskip("rclpy")
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    from revqom_nodes.ros.parameters import declare_parameters
    from revqom_nodes.runtime.errors import RuntimeConfigError

    rclpy.init()
    try:
        overrides = [Parameter("replay.rate", value=""), Parameter("replay.exit_delay_s", value=2)]
        node = Node("parameters_test", parameter_overrides=overrides)
        values = declare_parameters(node, "replay")
        assert values["replay.rate"] == node_defaults("replay")["replay.rate"]
        assert node.get_parameter("replay.rate").value == values["replay.rate"]  # what `ros2 param get` shows
        assert values["replay.exit_delay_s"] == 2.0 and values["replay.topics"] == []
        node.destroy_node()
        bad = Node("parameters_test", parameter_overrides=[Parameter("replay.loop", value="yes")])
        with pytest.raises(RuntimeConfigError, match=r"replay\.loop must be a bool"):
            declare_parameters(bad, "replay")
        bad.destroy_node()
    finally:
        rclpy.try_shutdown()
