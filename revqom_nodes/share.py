"""Where the ROS package ``revqom`` keeps its files (launch/, config/, models/): one look-up for all.

From a checkout (editable install or ``PYTHONPATH=<checkout>``) that is the checkout itself, so
edits take effect without reinstalling; otherwise ``<prefix>/share/revqom`` of the install
prefix whose ament index lists it (a colcon install, or the venv of a pip-only install).
No ROS import: the launch runner, the nodes and the offline tools all use it.
"""

from __future__ import annotations

import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

SOURCE_PACKAGE = "revqom"


class PackageNotFoundError(LookupError):
    """No install prefix lists the package; the message names the prefixes searched."""


def ament_prefixes() -> list[Path]:
    """The install prefixes searched for packages: ``AMENT_PREFIX_PATH``, then ``sys.prefix``.

    ``sys.prefix`` is where the ROS 2 wheels and the pip-only bootstrap install packages
    (``share/<pkg>``, ``lib/<pkg>``); on a sourced ROS 2 install it adds nothing new.
    """
    entries = [Path(p) for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    if Path(sys.prefix) not in entries:
        entries.append(Path(sys.prefix))
    return entries


def source_tree_root() -> Path | None:
    """The checkout that holds the imported ``revqom_nodes``, when it is the ROS package revqom."""
    root = Path(__file__).resolve().parents[1]
    manifest = root / "package.xml"
    if not manifest.is_file():
        return None
    try:
        name = ET.parse(manifest).getroot().findtext("name")
    except ET.ParseError:
        return None
    return root if name is not None and name.strip() == SOURCE_PACKAGE else None


def package_share_directory(package: str) -> Path:
    """``$(find-pkg-share package)``: for ``revqom`` the checkout when there is one; otherwise,
    and for every other package, ``<prefix>/share/<package>`` of the first of ``ament_prefixes()``
    whose ament index lists it. ``PackageNotFoundError`` when none does."""
    if package == SOURCE_PACKAGE:
        root = source_tree_root()
        if root is not None:
            return root
    prefixes = ament_prefixes()
    for prefix in prefixes:
        marker = prefix / "share" / "ament_index" / "resource_index" / "packages" / package
        if marker.is_file():
            return prefix / "share" / package
    raise PackageNotFoundError(
        f"package '{package}' not found (searched the ament index of: {', '.join(map(str, prefixes))})"
    )
