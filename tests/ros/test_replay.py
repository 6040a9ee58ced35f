"""``revqom replay``: a bag's messages come out with their stamps, in order, at the scaled pace."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def test_replay_cli_plays_the_bag_and_exits(tmp_path: Path, ros_env: dict[str, str]) -> None:
    rclpy = pytest.importorskip("rclpy")
    from geometry_msgs.msg import PoseStamped
    from rclpy.node import Node
    from revqom.msg import Detection3DArray
    from visualization_msgs.msg import MarkerArray

    from revqom_nodes.data.bag import convert_to_bag
    from revqom_nodes.data.dairv2x import DairV2XReader
    from revqom_nodes.data.synthetic import SynthConfig, generate_dataset
    from revqom_nodes.ros.conversions import stamp_to_ns
    from revqom_nodes.ros.qos import MARKER_QOS, POSE_QOS, RESULT_QOS

    generate_dataset(
        tmp_path / "dataset",
        3,
        5,
        scenes=1,
        progress=False,
        config=SynthConfig(vehicle_beams=8, infrastructure_rings=20),
    )
    convert_to_bag(tmp_path / "dataset", tmp_path / "bag", progress=False)
    reader = DairV2XReader(tmp_path / "dataset", "all")
    poses, truth, markers = [], [], []
    rclpy.init()
    try:
        node = Node("replay_test")
        node.create_subscription(
            PoseStamped, "/vehicle/pose", lambda m: poses.append((time.monotonic(), m)), POSE_QOS
        )
        node.create_subscription(Detection3DArray, "/ground_truth/boxes", truth.append, RESULT_QOS)
        node.create_subscription(MarkerArray, "/ground_truth/markers", markers.append, MARKER_QOS)
        replay = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "revqom_nodes.cli",
                "replay",
                str(tmp_path / "bag"),
                "--rate",
                "0.5",
                "--wait-for-subscribers",
                "/vehicle/pose",
                "/ground_truth/boxes",
            ],
            cwd=ROOT,
            env=ros_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 60
        while replay.poll() is None and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.05)
        for _ in range(20):
            rclpy.spin_once(node, timeout_sec=0.05)
        node.destroy_node()
    finally:
        rclpy.try_shutdown()
        if replay.poll() is None:
            replay.kill()
    output = replay.stdout.read()
    assert replay.returncode == 0, output[-3000:]
    expected = [reader[i].ego.timestamp_us * 1000 for i in range(len(reader))]
    assert [stamp_to_ns(m.header.stamp) for _, m in poses] == expected
    assert [stamp_to_ns(m.header.stamp) for m in truth] == expected
    assert len(markers) == 3 and markers[0].markers[0].action == 3  # DELETEALL first
    wall = poses[-1][0] - poses[0][0]
    bag = (expected[-1] - expected[0]) / 1e9
    assert wall == pytest.approx(bag / 0.5, abs=0.15)
    assert "end of bag" in output
