"""An EncodedBEV crosses a process boundary over DDS with every field and byte intact."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def test_encoded_bev_roundtrip_between_processes(ros_env: dict[str, str]) -> None:
    rclpy = pytest.importorskip("rclpy")
    from rclpy.node import Node

    from tests.ros.encoded_bev_sample import PAYLOAD_BYTES, make_encoded_bev

    expected = make_encoded_bev()
    assert len(expected.payload) == PAYLOAD_BYTES == 36_864
    publisher = subprocess.Popen(
        [sys.executable, "-m", "tests.ros.publish_encoded_bev"], cwd=ROOT, env=ros_env
    )
    received = []
    rclpy.init()
    try:
        node = Node("roundtrip_subscriber")
        node.create_subscription(type(expected), "roundtrip/encoded_bev", received.append, 10)
        deadline = time.monotonic() + 30.0
        while not received and time.monotonic() < deadline:
            assert publisher.poll() is None, "publisher process died"
            rclpy.spin_once(node, timeout_sec=0.1)
        node.destroy_node()
    finally:
        rclpy.try_shutdown()
        publisher.terminate()
        publisher.wait(timeout=10)
    assert received, "no EncodedBEV arrived within 30 s"
    message = received[0]
    from rclpy.serialization import serialize_message

    assert bytes(message.payload) == bytes(expected.payload)
    assert message.lidar_pose.position.x == expected.lidar_pose.position.x  # float64 kept
    assert message.codebook_id == expected.codebook_id
    assert (message.sequence, message.height, message.width) == (4_000_000_001, 128, 128)
    assert (message.slice_index, message.num_slices, message.first_cell, message.num_cells) == (
        0,
        1,
        0,
        16_384,
    )
    # Every other field: the CDR bytes of both messages are identical.
    assert serialize_message(message) == serialize_message(expected)
