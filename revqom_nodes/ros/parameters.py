"""Declaring a node's parameters from its ``config/<node>.param.yaml``: defaults and docs live there.

``declare_parameters(node, "agent")`` declares every parameter of ``config/agent.param.yaml``
(``revqom_nodes.defaults``) with the file's value as default and its comment as description,
and returns the values in force. Launch files and parameter YAML type values by YAML rules
(``150`` is an int, ``150.0`` a float) while ROS parameters are statically typed: a float
parameter accepts either, a list a single value, and an empty string means "not set" (what a
launch argument left at its default passes), so the default applies. Anything else raises
``RuntimeConfigError`` naming the parameter, and the node stops with a clear message.
"""

from __future__ import annotations

from typing import Any

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.parameter import Parameter

from revqom_nodes.defaults import node_parameters
from revqom_nodes.runtime.errors import RuntimeConfigError


def _coerce(name: str, value: Any, default: Any) -> Any:
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, str):
        if isinstance(value, str):
            return value
    elif isinstance(default, list):
        items = value if isinstance(value, (list, tuple)) else [value]
        kind = type(default[0]) if default else None
        return [_coerce(name, item, kind()) if kind else item for item in items]
    raise RuntimeConfigError(f"parameter {name} must be a {type(default).__name__}, got {value!r}")


def _declare(node: Node, name: str, default: Any, description: str) -> Any:
    """Declare ``name`` (dynamically typed) and return its value converted to ``default``'s type.

    An empty list default means "a list, empty unless set" (items keep their YAML types).
    """
    descriptor = ParameterDescriptor(description=description, dynamic_typing=True)
    value = node.declare_parameter(name, default if default != [] else [""], descriptor).value
    if value == "" and default != "":  # an unset launch argument: show the default (`ros2 param get`)
        node.set_parameters([Parameter(name, value=default if default != [] else [""])])
        return default
    if value is None:  # an empty YAML list
        return default
    if isinstance(default, list) and not default:
        items = value if isinstance(value, (list, tuple)) else [value]
        return [v for v in items if v != ""]
    return _coerce(name, value, default)


def declare_parameters(node: Node, config: str) -> dict[str, Any]:
    """Declare every parameter of ``config/<config>.param.yaml`` on ``node``; name -> value in force."""
    return {
        name: _declare(node, name, parameter.default, parameter.description)
        for name, parameter in node_parameters(config).items()
    }
