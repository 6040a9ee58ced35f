"""Declaring node parameters: typed by their defaults, forgiving about int vs float.

Launch files and parameter YAML type values by YAML rules (``150`` is an int, ``150.0`` a
float); ROS parameters are statically typed. ``declare`` accepts either for a float
parameter, and lists given as a single value, and raises ``RuntimeConfigError`` (naming the
parameter) for anything else, so a node stops with a clear message instead of a traceback.
"""

from __future__ import annotations

from typing import Any, TypeVar

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node

from revqom_nodes.runtime.errors import RuntimeConfigError

T = TypeVar("T")


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


def declare(node: Node, name: str, default: T, description: str) -> T:
    """Declare ``name`` (dynamically typed) and return its value converted to ``default``'s type.

    An empty list default means "a list, empty unless set" (items keep their YAML types).
    """
    descriptor = ParameterDescriptor(description=description, dynamic_typing=True)
    value = node.declare_parameter(name, default if default != [] else [""], descriptor).value
    if value is None:  # an empty YAML list reaches rclpy as "not set"
        return default
    if isinstance(default, list) and not default:
        items = value if isinstance(value, (list, tuple)) else [value]
        return [v for v in items if v != ""]  # type: ignore[return-value]
    return _coerce(name, value, default)
