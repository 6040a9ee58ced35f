"""The roadside unit's settings: agent_node parameters plus its own, resolved once.

Layers, later ones winning: the agent_node defaults that apply to a unit
(``config/agent.param.yaml``, through ``defaults.node_defaults``), ``config/rsu.yaml``, the
YAML file of ``--config`` (a mapping of dotted names), ``--set name=value`` overrides (values
read as YAML). An unknown name, an agent parameter a unit does not use, or a value of another
type than the default's is a ``RuntimeConfigError`` that says which.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from revqom_nodes.defaults import node_defaults
from revqom_nodes.runtime.errors import RuntimeConfigError
from revqom_nodes.share import SOURCE_PACKAGE, package_share_directory

AGENT_PARAMETERS = (  # the agent_node parameters a unit uses (not pose.wait_ms: its poses are all at hand)
    "model.path",
    "agent.id",
    "agent.role",
    "device",
    "codec.encoding",
    "torch.num_threads",
    "input.topic",
    "pose.topic",
    "pose.static",
    "pose.max_age_ms",
    "output.topic",
    "output.slice_bytes",
    "output.interleave",
    "security.trust_dir",
)
CLOCKS = ("wall", "ros")


def unit_defaults() -> dict[str, Any]:
    """Every setting's default: the agent's (``AGENT_PARAMETERS``), then ``config/rsu.yaml``'s."""
    agent = node_defaults("agent")
    settings = {name: agent[name] for name in AGENT_PARAMETERS}
    path = package_share_directory(SOURCE_PACKAGE) / "config" / "rsu.yaml"
    settings.update(_mapping(yaml.safe_load(path.read_text(encoding="utf-8")), path))
    return settings


def _mapping(data: object, where: object) -> dict[str, Any]:
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise RuntimeConfigError(f"{where}: need a mapping of setting names to values")
    return dict(data)


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``["source.rate=0.5", ...]`` -> {name: YAML value}; RuntimeConfigError without ``=``."""
    overrides = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise RuntimeConfigError(f"--set needs name=value, got {pair!r}")
        overrides[name.strip()] = yaml.safe_load(value) if value.strip() else ""
    return overrides


def resolve(config_file: str | Path | None, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The unit's settings from the defaults, ``config_file`` and ``overrides``, checked."""
    settings = unit_defaults()
    layers: list[tuple[object, Mapping[str, Any]]] = []
    if config_file:
        path = Path(config_file)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise RuntimeConfigError(f"--config {path}: {exc}") from None
        layers.append((path, _mapping(data or {}, path)))
    layers.append(("--set", overrides))
    agent = node_defaults("agent")
    for where, layer in layers:
        for name, value in layer.items():
            if name not in settings:
                hint = " (an agent_node parameter a roadside unit does not use)" if name in agent else ""
                raise RuntimeConfigError(
                    f"{where}: unknown setting {name!r}{hint}; valid: {sorted(settings)}"
                )
            settings[name] = _typed(name, value, settings[name], where)
    if bool(settings["source.data"]) == bool(settings["source.bag"]):
        raise RuntimeConfigError("set exactly one of source.data (a DAIR-V2X-C root) and source.bag")
    if settings["source.clock"] not in CLOCKS:
        clock = settings["source.clock"]
        raise RuntimeConfigError(f"source.clock must be one of {list(CLOCKS)}, got {clock!r}")
    if not settings["model.path"]:
        raise RuntimeConfigError("model.path is required")
    return settings


def _typed(name: str, value: Any, default: Any, where: object) -> Any:
    """``value`` as the type of ``default`` (an int is a float too); RuntimeConfigError otherwise."""
    if isinstance(default, bool) or isinstance(value, bool):
        ok = isinstance(value, bool) and isinstance(default, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float))
        value = float(value) if ok else value
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise RuntimeConfigError(f"{where}: {name} must be a {type(default).__name__}, got {value!r}")
    return value
