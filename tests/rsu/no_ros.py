"""Runs the ``revqom`` command with ROS unimportable: any import of rclpy, of the generated or
standard ROS message packages, or of ``revqom_nodes.ros`` raises ImportError.

Usage: ``python -m tests.rsu.no_ros rsu --config ...`` (the arguments of ``revqom``). The
roadside unit tests run it this way, so a ROS import anywhere in its import graph fails them.
"""

from __future__ import annotations

import importlib.abc
import sys

BLOCKED = frozenset(
    {"rclpy", "rosidl_runtime_py", "rmw", "revqom", "std_msgs", "builtin_interfaces", "geometry_msgs",
     "sensor_msgs", "rosgraph_msgs", "visualization_msgs"}
)


class NoRos(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name.split(".")[0] in BLOCKED or name.split(".")[:2] == ["revqom_nodes", "ros"]:
            raise ImportError(f"{name} is blocked: the roadside unit runs without ROS")
        return None


def block_ros() -> None:
    sys.meta_path.insert(0, NoRos())


if __name__ == "__main__":
    block_ros()
    from revqom_nodes.cli import main

    sys.exit(main(sys.argv[1:]))
