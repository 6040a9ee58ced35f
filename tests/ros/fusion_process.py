"""Helpers of the multi-process fusion node tests: start the node as a child process, spin a
test node until something holds, stop the child and get its exit status."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STACK_DUMP_S = 2.0  # for a hung node to write its stacks before it is killed


def start_fusion_node(
    model_path: Path, log_path: Path, env: dict[str, str], *parameters: str
) -> subprocess.Popen:
    """``fusion_node`` named ``fusion`` on the CPU with the tiny model, its outputs on /fusion/*,
    a 300 ms sync wait, and ``parameters`` (``name:=value``); output into ``log_path``."""
    arguments = [
        f"model.path:={model_path}",
        "device:=cpu",
        "fusion.sync_wait_ms:=300.0",
        "output.detections_topic:=/fusion/detections",
        "output.status_topic:=/fusion/status",
        "output.markers_topic:=/fusion/markers",
        *parameters,
    ]
    with open(log_path, "w") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "revqom_nodes.ros.fusion_node",
                "--ros-args",
                "-r",
                "__node:=fusion",
                *(token for argument in arguments for token in ("-p", argument)),
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def spin_for(rclpy, node, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.01)


def wait_until_up(rclpy, node, fusion: subprocess.Popen, log_path: Path, timeout_s: float = 120.0) -> None:
    """Spin ``node`` until the fusion node publishes detections and subscribes to the ego topic."""
    deadline = time.monotonic() + timeout_s
    while (
        node.count_publishers("/fusion/detections") == 0
        or node.count_subscribers("/vehicle/encoded_bev") == 0
    ):
        assert fusion.poll() is None, log_path.read_text()[-3000:]
        assert time.monotonic() < deadline, "the fusion node did not come up"
        spin_for(rclpy, node, 0.2)
    spin_for(rclpy, node, 1.0)


def stop(process: subprocess.Popen) -> int | None:
    """SIGINT, then the exit status (None: it had to be killed, after SIGUSR1 had it write its
    threads' stacks into its log)."""
    process.send_signal(signal.SIGINT)
    try:
        return process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGUSR1)
        time.sleep(STACK_DUMP_S)
        process.kill()
        return None


def start_publisher(message_file: Path, topic: str, period_s: float, env: dict[str, str]) -> subprocess.Popen:
    """``tests.ros.publish_agent_frames``: the serialized EncodedBEV in ``message_file`` on
    ``topic`` every ``period_s``, stamped with the wall clock."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.ros.publish_agent_frames", str(message_file), topic, str(period_s)],
        cwd=ROOT,
        env=env,
    )


def listen(node, detections: dict, statuses: list) -> None:
    """Keep the fusion node's detections (by stamp, ns) and statuses in the given containers."""
    from revqom.msg import Detection3DArray, FusionStatus

    from revqom_nodes.ros.qos import RESULT_QOS

    node.create_subscription(
        Detection3DArray,
        "/fusion/detections",
        lambda m: detections.setdefault(m.header.stamp.sec * 10**9 + m.header.stamp.nanosec, m),
        RESULT_QOS,
    )
    node.create_subscription(FusionStatus, "/fusion/status", statuses.append, RESULT_QOS)
