"""The package layout of shared/ARCHITECTURE.md, checked on the source: imports point down only.

Every ``import`` of ``revqom_nodes.*`` (top-level or inside a function) is read with ``ast``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "revqom_nodes"

# Lower numbers sit lower; a package may import its own modules and any package of a lower level.
LEVELS: dict[str, int] = {
    "share": -1,  # where the package's files are (launch/, config/, models/): under everything
    "geometry": 0,
    "defaults": 0,  # node parameter defaults, read from config/*.param.yaml
    "machine": 0,  # what a benchmark ran on
    "process": 0,  # what every compute process sets first: threads, freed memory kept
    "codec": 1,
    "trust": 1,
    "data": 1,
    "perception": 2,
    "model_file": 3,
    "training": 4,
    "runtime": 4,
    "evaluation": 5,  # drives the runtime's encoder, validation and fusion engine, as the nodes do
    "ros": 5,
    "rsu": 5,  # the roadside unit without ROS: runtime and cyclonedds, never ros/ or rclpy
    "scenario": 6,
    "info": 7,
    "bench": 7,
    "cli": 7,
}
STANDALONE = {"launcher"}  # imports no other package; only the scenario and the CLI import it
STANDALONE_MAY_IMPORT = {"share"}  # where the package's files are: the launcher's $(find-pkg-share)
ROS_GLUE = {"__init__", "conversions", "qos", "parameters", "lifecycle", "worker"}


def _unit(path: Path) -> str:
    """revqom_nodes/<unit>/... or revqom_nodes/<unit>.py -> unit."""
    return path.relative_to(PACKAGE_ROOT).parts[0].removesuffix(".py")


def _imported_units(path: Path) -> set[str]:
    units = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "revqom_nodes" and len(parts) > 1:
                units.add(parts[1])
    return units


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE_ROOT.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE_ROOT)))
def test_imports_point_down(path: Path) -> None:
    unit = _unit(path)
    if unit == "__init__":
        return
    for imported in _imported_units(path) - {unit, "__init__"}:
        if unit in STANDALONE and imported not in STANDALONE_MAY_IMPORT:
            pytest.fail(f"{path.name}: {unit} stands alone but imports {imported}")
        if imported in STANDALONE:
            assert unit in {"scenario", "cli"}, f"{path}: only scenario and cli import {imported}"
            continue
        assert imported in LEVELS, f"{path}: imports unknown package {imported}; add it to LEVELS"
        if unit in STANDALONE:
            continue
        assert LEVELS[imported] < LEVELS[unit], (
            f"{path.relative_to(PACKAGE_ROOT)}: {unit} (level {LEVELS[unit]}) imports {imported} "
            f"(level {LEVELS[imported]}); imports must point down (shared/ARCHITECTURE.md)"
        )


def test_every_package_has_a_level() -> None:
    units = {_unit(p) for p in _modules()} - {"__init__"}
    assert units <= set(LEVELS) | STANDALONE, units - set(LEVELS) - STANDALONE


def test_ros_holds_nodes_and_their_glue_only() -> None:
    for path in (PACKAGE_ROOT / "ros").glob("*.py"):
        if path.stem in ROS_GLUE:
            continue
        assert "rclpy" in path.read_text(), f"{path.name} does not use rclpy: it belongs outside ros/"


def test_core_never_imports_rclpy() -> None:
    core = {"share", "geometry", "defaults", "codec", "trust", "data", "perception", "model_file", "training",
            "evaluation", "runtime", "launcher", "rsu"}
    for path in _modules():
        if _unit(path) in core:
            assert "rclpy" not in _imported_top_level(path), f"{path}: the core never imports rclpy"


def _imported_top_level(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found
