"""The default of every node parameter, read from ``config/<node>.param.yaml``: their one home.

The nodes declare their parameters from these files (value and description), the launch file
passes only what its user sets, and offline tools that mirror a node (``revqom eval
--slice-loss``, the benches, the demo pictures) import the same values::

    node_defaults("agent")["output.slice_bytes"]  # 1000

A parameter file documents each parameter with a comment on its line, continued on the lines
below it that start with ``#`` and at least two more spaces. No ROS import.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from revqom_nodes.share import SOURCE_PACKAGE, package_share_directory

NODES = ("agent", "fusion", "replay", "recorder")
_INDENT = " " * 4  # parameters sit under "/**:" and "ros__parameters:"
_PARAMETER = re.compile(rf"^{_INDENT}(?P<name>[A-Za-z_][\w.]*):[^#]*(?:#\s?(?P<doc>.*))?$")
_CONTINUATION = re.compile(rf"^{_INDENT}#\s\s+(?P<doc>\S.*)$")


@dataclass(frozen=True)
class NodeParameter:
    """One parameter of a node: its default (typed by YAML) and its comment."""

    default: Any
    description: str


def parameter_file(node: str) -> Path:
    """``config/<node>.param.yaml`` of the package share (the checkout, else the install)."""
    if node not in NODES:
        raise KeyError(f"no parameter file for node {node!r} (nodes: {', '.join(NODES)})")
    return package_share_directory(SOURCE_PACKAGE) / "config" / f"{node}.param.yaml"


@functools.cache
def node_parameters(node: str) -> Mapping[str, NodeParameter]:
    """Every parameter of ``node`` (``agent``, ``fusion``, ``replay``, ``recorder``), in file order."""
    path = parameter_file(node)
    text = path.read_text(encoding="utf-8")
    values = yaml.safe_load(text)["/**"]["ros__parameters"]
    docs: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if match := _PARAMETER.match(line):
            current = docs.setdefault(match["name"], [])
            if match["doc"]:
                current.append(match["doc"].strip())
        elif (match := _CONTINUATION.match(line)) and current is not None:
            current.append(match["doc"].strip())
        else:
            current = None
    if set(docs) != set(values):
        odd = sorted(set(values) ^ set(docs))
        raise ValueError(f"{path}: write each parameter on one line, 4 spaces in ({', '.join(odd)})")
    return MappingProxyType({name: NodeParameter(values[name], " ".join(docs[name])) for name in values})


def node_defaults(node: str) -> Mapping[str, Any]:
    """Dotted parameter name -> default of ``node``: ``node_defaults("fusion")["fusion.max_age_ms"]``."""
    return MappingProxyType({name: p.default for name, p in node_parameters(node).items()})
