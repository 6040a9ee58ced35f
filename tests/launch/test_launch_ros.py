"""A real rclpy node accepts the runner's command line: name, namespace, parameters, remaps."""

from __future__ import annotations

import io
import json
import sys
import textwrap
import time
from pathlib import Path

import pytest

from revqom_nodes.launcher.file import parse_launch_file
from revqom_nodes.launcher.runner import LaunchRunner

pytestmark = pytest.mark.ros

PROBE_NODE = textwrap.dedent("""
    import json, sys
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from rclpy.impl.implementation_singleton import rclpy_implementation
    from rclpy.node import Node
    from std_msgs.msg import String

    rclpy.init(args=sys.argv)
    node = Node("unnamed", automatically_declare_parameters_from_overrides=True)
    publisher = node.create_publisher(String, "points", 1)
    builtin = ("use_sim_time", "start_type_description_service")
    parameters = {name: node.get_parameter(name).value for name in node._parameters if name not in builtin}
    try:  # the test stops the node as soon as this line is out: Ctrl-C may land before the spin
        print("probe " + json.dumps({"name": node.get_fully_qualified_name(), "topic": publisher.topic_name,
                                     "parameters": parameters}), flush=True)
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        print("stopped", flush=True)
    except rclpy_implementation.RCLError:  # the shutdown between the executor's context check and wait
        if node.context.ok():
            raise
    finally:
        rclpy.try_shutdown()
""")

LAUNCH = """<?xml version="1.0"?>
<launch>
  <arg name="max_age_ms" default="150"/>
  <group>
    <push-ros-namespace namespace="vehicle"/>
    <node pkg="test_pkg" exec="probe" name="probe">
      <param from="$(dirname)/base.param.yaml"/>
      <param name="fusion.max_age_ms" value="$(var max_age_ms)"/>
      <param name="ranges" value="[-51.2, 51.2]"/>
      <param name="model"><param name="path" value="/m.pt"/></param>
      <param name="label" value="007" type="str"/>
      <remap from="points" to="/vehicle/lidar/points"/>
    </node>
  </group>
</launch>
"""


def test_rclpy_node_reads_the_runner_command_line(tmp_path: Path, ros_env: dict[str, str]) -> None:
    (tmp_path / "probe.py").write_text(PROBE_NODE)
    base = "/**:\n  ros__parameters:\n    fusion.max_age_ms: 1\n    k: 4\n"
    (tmp_path / "base.param.yaml").write_text(base)
    launch_file = tmp_path / "probe.launch.xml"
    launch_file.write_text(LAUNCH)
    nodes = parse_launch_file(launch_file, {"max_age_ms": "200"})
    out = io.StringIO()
    executables = {("test_pkg", "probe"): [sys.executable, str(tmp_path / "probe.py")]}
    err = io.StringIO()
    runner = LaunchRunner(nodes, executables=executables, stdout=out, stderr=err)
    with runner:
        deadline = time.monotonic() + 30.0
        while "[vehicle/probe] probe " not in out.getvalue():
            assert runner.returncodes["vehicle/probe"] is None, out.getvalue()
            assert time.monotonic() < deadline, "the probe node did not start within 30 s"
            time.sleep(0.05)
    assert runner.shutdown() == 0, err.getvalue()
    line = next(x for x in out.getvalue().splitlines() if x.startswith("[vehicle/probe] probe "))
    report = json.loads(line.removeprefix("[vehicle/probe] probe "))
    assert report["name"] == "/vehicle/probe"
    assert report["topic"] == "/vehicle/lidar/points"
    assert report["parameters"] == {
        "fusion.max_age_ms": 200, "k": 4, "ranges": [-51.2, 51.2], "model.path": "/m.pt", "label": "007",
    }
    assert "[vehicle/probe] stopped" in out.getvalue()
