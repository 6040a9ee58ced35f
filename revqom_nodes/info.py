"""``revqom info``: what this installation has (versions, ROS 2 interfaces, devices)."""

from __future__ import annotations

import argparse
import importlib
import json
import platform


def _version(module: str) -> str | None:
    try:
        return str(getattr(importlib.import_module(module), "__version__", "installed"))
    except ImportError:
        return None


def collect() -> dict:
    """Versions of the packages the runtime depends on; None where one is missing."""
    info: dict = {"python": platform.python_version()}
    for module in ("numpy", "torch", "spconv", "yaml", "rosbags", "cyclonedds", "constriction", "rclpy"):
        info[module] = _version(module)
    try:
        from revqom.msg import EncodedBEV  # noqa: F401  (the generated interfaces)

        info["revqom_interfaces"] = True
    except ImportError:
        info["revqom_interfaces"] = False
    torch = importlib.import_module("torch") if info["torch"] else None
    info["cuda"] = bool(torch and torch.cuda.is_available())
    return info


def _run(args: argparse.Namespace) -> int:
    print(json.dumps(collect(), indent=2))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("info", help="print versions, interfaces and devices as JSON")
    parser.set_defaults(run=_run)
