"""ros2_ws builds the revqom package with colcon, as on a full ROS 2 install."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def _copy_checkout(destination: Path) -> None:
    """Copy the files git would carry (tracked and new, not ignored), the ros2_ws link included."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT, check=True, capture_output=True,
    ).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        elif source.is_file():
            shutil.copy2(source, target)


def test_colcon_build_of_ros2_ws(tmp_path: Path) -> None:
    colcon = Path(sys.prefix) / "bin" / "colcon"
    if not colcon.exists():
        pytest.skip("colcon is not installed in this environment")
    checkout = tmp_path / "revqom"
    _copy_checkout(checkout)
    workspace = checkout / "ros2_ws"
    env = dict(os.environ, AMENT_PREFIX_PATH=sys.prefix, CMAKE_PREFIX_PATH=sys.prefix)
    result = subprocess.run(
        [str(colcon), "build", "--event-handlers", "console_direct-",
         "--cmake-args", f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=OFF"],
        cwd=workspace, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "1 package finished" in result.stdout  # the link is followed once, no recursion
    prefix = workspace / "install" / "revqom"
    share = prefix / "share" / "revqom"
    for relative in ("package.xml", "launch/scenario.launch.xml", "config", "models"):
        assert (share / relative).exists(), relative
    for node in ("agent_node", "fusion_node", "replay_node"):
        assert os.access(prefix / "lib" / "revqom" / node, os.X_OK), node
    site = prefix / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    library_path = f"{prefix / 'lib'}:{env.get('LD_LIBRARY_PATH', '')}"
    probe = subprocess.run(
        [sys.executable, "-c", "import revqom.msg, revqom_nodes; print(revqom_nodes.__file__)"],
        env=dict(env, PYTHONPATH=str(site), LD_LIBRARY_PATH=library_path),
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip().startswith(str(site))
