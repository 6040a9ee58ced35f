"""tools/requirements-core.txt installs on the Python of every ROS 2 distribution the README names.

Each package is pinned exactly once for each of those Pythons (markers choose between pins), and
the pins for this venv's Python are the ones installed here. Wheel availability per Python was
looked up on the package index when the pins were chosen (the file says which release and why).
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "tools" / "requirements-core.txt"
DISTRIBUTIONS = {"humble": "3.10", "pip-only venv": "3.11", "jazzy": "3.12", "kilted": "3.12"}


def _requirements() -> list[Requirement]:
    lines = (line.split(" #")[0].strip() for line in CORE.read_text().splitlines())
    return [Requirement(line) for line in lines if line and not line.startswith("#")]


def _pins_for(python: str) -> dict[str, str]:
    pins: dict[str, str] = {}
    for requirement in _requirements():
        if requirement.marker is None or requirement.marker.evaluate({"python_version": python}):
            name = canonicalize_name(requirement.name)
            name = "spconv" if name.startswith("spconv") else name  # one of the CUDA builds
            assert name not in pins, f"{requirement.name} pinned twice for Python {python}"
            (specifier,) = requirement.specifier
            assert specifier.operator == "==", requirement
            pins[name] = specifier.version
    return pins


def test_the_readme_names_these_distributions() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "### With a full ROS 2 install (Humble, Jazzy, Kilted)" in readme


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_every_package_is_pinned_once_per_python(distribution: str) -> None:
    assert set(_pins_for(DISTRIBUTIONS[distribution])) == set(_pins_for("3.11"))


def test_this_venv_has_the_pins_of_its_python() -> None:
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    for requirement in _requirements():
        if requirement.marker is None or requirement.marker.evaluate({"python_version": python}):
            try:
                installed = metadata.version(requirement.name)
            except metadata.PackageNotFoundError:
                pytest.skip(f"{requirement.name} is not installed here")
            assert requirement.specifier.contains(installed), f"{requirement.name} {installed}"
