"""The traffic side of ``revqom bench attack`` (bench_attack.py): the fusion node processes, and
``AttackTraffic``, the rclpy node that sends legit and forged slices to them and keeps what they
publish back.

Two fusion nodes: ``signed`` enforces authentication on the agents' usual topics, ``unsigned``
runs without a trust store on topics of its own (``UNSIGNED_PREFIX``); their outputs go to
``/attack_bench/<node>/...``. A phase is ``run_phase``: frames one every ``FRAME_PERIOD_S``,
stamped with the wall clock (the node checks stamps against its clock), each with an attack's
forged messages around it, then one attack-free closing frame whose FusionStatus closes the
phase's counters.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# On the 2 shared cores of the development machine one fusion takes 150-600 ms: a frame period
# and a sync wait that leave the legit frames whole without attacks (the baseline phase).
FRAME_PERIOD_S = 1.0
SYNC_WAIT_MS = 800.0
# Forged messages go out in bursts of PUBLISH_BURST with PUBLISH_PAUSE_S between, FORGED_LEAD_S
# before the legit slices: an attack, not a flood (``scenario.flood`` measures floods), so that
# the reader's history (ros/qos.py) never overflows and every message reaches the reception rules.
PUBLISH_BURST = 16
PUBLISH_PAUSE_S = 0.02
FORGED_LEAD_S = 0.1
STARTUP_TIMEOUT_S = 300.0
CLOSING_TIMEOUT_S = 15.0
AGENT_TOPICS = {"vehicle": "/vehicle/encoded_bev", "infrastructure": "/infrastructure/encoded_bev"}
UNSIGNED_PREFIX = "/attack_bench_unsigned"
NODES = ("signed", "unsigned")


def topics(node: str) -> dict[str, str]:
    prefix = UNSIGNED_PREFIX if node == "unsigned" else ""
    return {agent: prefix + topic for agent, topic in AGENT_TOPICS.items()}


def output_topic(node: str, what: str) -> str:
    return f"/attack_bench/{node}/{what}"


def start_fusion(node: str, model: Path, log_path: Path, trust_dir: Path | None) -> subprocess.Popen:
    """A ``fusion_node`` process (``node``: signed or unsigned) on the CPU; output into ``log_path``."""
    inputs = topics(node)
    parameters = [
        f"model.path:={model}",
        "device:=cpu",
        f"fusion.sync_wait_ms:={SYNC_WAIT_MS}",
        f"fusion.agent_topics:=[{inputs['vehicle']},{inputs['infrastructure']}]",
        f"output.detections_topic:={output_topic(node, 'detections')}",
        f"output.status_topic:={output_topic(node, 'status')}",
        f"output.markers_topic:={output_topic(node, 'markers')}",
        *([f"security.trust_dir:={trust_dir}"] if trust_dir is not None else []),  # none: mode auto is off
    ]
    with open(log_path, "w", encoding="utf-8") as stream:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "revqom_nodes.ros.fusion_node",
                "--ros-args",
                "-r",
                f"__node:=fusion_{node}",
            ]
            + [token for p in parameters for token in ("-p", p)],
            stdout=stream,
            stderr=subprocess.STDOUT,
        )


def stop(process: subprocess.Popen) -> int | None:
    """SIGINT, then the exit status (None: it had to be killed)."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        return process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return None


class AttackTraffic:
    """The sending node and what it hears back from both fusion nodes."""

    def __init__(self, rclpy: Any, forger: Any, signers: dict[str, Any]) -> None:
        from rclpy.node import Node
        from revqom.msg import Detection3DArray, EncodedBEV, FusionStatus

        from revqom_nodes.ros.qos import ENCODED_BEV_QOS, RESULT_QOS

        self.rclpy, self.forger, self.signers = rclpy, forger, signers
        self.node = Node("attack_bench")
        self.publishers = {
            topic: self.node.create_publisher(EncodedBEV, topic, ENCODED_BEV_QOS)
            for node in NODES
            for topic in topics(node).values()
        }
        self.detections: dict[tuple[str, int], Any] = {}
        self.statuses: dict[tuple[str, int], Any] = {}
        for node in NODES:
            self.node.create_subscription(
                Detection3DArray,
                output_topic(node, "detections"),
                lambda m, n=node: self.detections.setdefault((n, stamp_ns(m.header.stamp)), m),
                RESULT_QOS,
            )
            self.node.create_subscription(
                FusionStatus,
                output_topic(node, "status"),
                lambda m, n=node: self.statuses.setdefault((n, stamp_ns(m.header.stamp)), m),
                RESULT_QOS,
            )
        self.sequence = 0
        self.sign_s: list[float] = []
        self.legit_sent: list[Any] = []
        self.legit_stamps: set[int] = set()  # every phase's

    def spin_for(self, seconds: float) -> None:
        """Handle what the fusion nodes publish for ``seconds``."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.rclpy.spin_once(self.node, timeout_sec=0.005)

    def wait_until_up(self, processes: dict[str, subprocess.Popen], logs: dict[str, Path]) -> None:
        """Until every fusion node subscribes to its inputs and publishes its status; RuntimeError
        (with the end of its log) when one exits or ``STARTUP_TIMEOUT_S`` passes."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        for node, process in processes.items():
            while self.node.count_publishers(output_topic(node, "status")) == 0 or any(
                self.node.count_subscribers(t) == 0 for t in topics(node).values()
            ):
                if process.poll() is not None:
                    raise RuntimeError(f"fusion node {node} exited: {logs[node].read_text()[-3000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"fusion node {node} did not come up in {STARTUP_TIMEOUT_S:g} s")
                self.spin_for(0.2)
        self.spin_for(1.0)

    def publish(self, node: str, messages: Sequence[Any]) -> None:
        """``messages`` to ``node``, each on the topic of the agent it claims to be, paced."""
        from revqom_nodes.ros.conversions import slice_to_encoded_bev

        inputs = topics(node)
        for index, message in enumerate(messages):
            if index and index % PUBLISH_BURST == 0:
                self.spin_for(PUBLISH_PAUSE_S)
            self.publishers[inputs[message.agent_id]].publish(slice_to_encoded_bev(message))

    def _legit(self, sweep: Any, stamp_ns: int, signed: bool) -> list[Any]:
        """The sweep's slices, signed (each signature timed) when ``signed``."""
        from revqom_nodes.runtime.security import sign_slice

        messages = self.forger.legit(sweep, stamp_ns=stamp_ns, sequence=self.sequence)
        if not signed:
            return messages
        out = []
        for message in messages:
            start = time.perf_counter()
            out.append(sign_slice(message, self.signers[sweep.agent_id]))
            self.sign_s.append(time.perf_counter() - start)
        self.legit_sent.extend(out)
        return out

    def run_phase(
        self, node: str, attack: str | None, egos: Sequence[Any], infras: Sequence[Any]
    ) -> dict[str, Any]:
        """``len(egos) - 1`` frames with ``attack`` (None: none), then an attack-free closing frame."""
        from revqom_nodes.scenario.attacks import Forged, Frame

        signed, previous = node == "signed", None
        stamps, forged_stamps, forged_sent, legit_bytes = [], set(), 0, 0
        for index, (ego, infra) in enumerate(zip(egos, infras, strict=True)):
            self.sequence += 1
            stamp = time.time_ns()
            frame = Frame(
                stamp, self.sequence, self._legit(ego, stamp, signed), self._legit(infra, stamp, signed)
            )
            closing = index == len(egos) - 1
            forged = (
                Forged([], [])
                if attack is None or closing
                else self.forger.attack(attack, ego, infra, frame, previous)
            )
            started = time.monotonic()
            self.publish(node, forged.before)
            if forged.before:
                self.spin_for(FORGED_LEAD_S)
            self.publish(node, frame.infra)
            self.publish(node, frame.ego)
            self.publish(node, forged.after)
            forged_sent += len(forged.before) + len(forged.after)
            forged_stamps |= {
                m.stamp_ns for m in [*forged.before, *forged.after] if m.agent_id == ego.agent_id
            }
            self.legit_stamps.add(stamp)
            legit_bytes += sum(m.payload_bytes for m in [*frame.ego, *frame.infra])
            stamps.append(stamp)
            previous = frame
            self.spin_for(FRAME_PERIOD_S - (time.monotonic() - started))
        deadline = time.monotonic() + CLOSING_TIMEOUT_S
        while (node, stamps[-1]) not in self.statuses and time.monotonic() < deadline:
            self.spin_for(0.1)
        if (node, stamps[-1]) not in self.statuses:
            raise RuntimeError(
                f"phase {attack or 'baseline'} on the {node} node: no status for its closing frame"
            )
        return {
            "stamps": stamps[:-1],
            "closing": stamps[-1],
            "forged_sent": forged_sent,
            "forged_stamps": forged_stamps,
            "legit_bytes": legit_bytes,
        }


def stamp_ns(stamp: Any) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec
