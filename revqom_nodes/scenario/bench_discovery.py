"""``revqom bench discovery``: how long DDS discovery takes to join N agents to a fusion node.

Per count N of ``--agents`` and per repeat: a receiver process (an rclpy node subscribing to
N EncodedBEV topics ``/agent_k/encoded_bev`` with the fusion node's QoS, ``ros/qos.py``) runs
first; then N agent processes start at once, each creating an rclpy node and an EncodedBEV
publisher on its topic, as the agent nodes do. Every process is its own DDS participant on
this machine's loopback, in the environment's domain (``ROS_DOMAIN_ID``, discovery range,
RMW implementation). An agent prints the wall clock as it creates its publisher (its node, the
DDS participant, exists by then); the receiver
prints the wall clock of each subscription's first match (the ``matched`` event). Per agent:
``discovery_ms`` = matched - created. Per N, over every agent of every repeat: p50 / p95 / max
of ``discovery_ms``, ``all_matched_ms`` (per repeat: the last match minus the first agent's
creation; p50 and max), and ``start_ms`` (process start to publisher created: interpreter,
rclpy and message imports, node creation; a real agent node adds PyTorch and its model).

Prints one JSON object: ``{"rmw": ..., "agents": {N: {...}}}``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

import numpy as np

CHILD = "revqom_nodes.scenario.bench_discovery"
TIMEOUT_S = 60.0  # a count whose agents are not all matched by then is an error


def topic(agent: int) -> str:
    return f"/agent_{agent}/encoded_bev"


def receiver(count: int) -> int:
    """Child: subscribe to ``count`` agent topics, print ``matched K NS`` on each first match."""
    import rclpy
    from rclpy.event_handler import SubscriptionEventCallbacks
    from rclpy.node import Node
    from revqom.msg import EncodedBEV

    from revqom_nodes.ros.qos import ENCODED_BEV_QOS

    rclpy.init()
    node = Node("discovery_receiver")
    matched: set[int] = set()

    def on_match(agent: int) -> Any:
        def callback(info: Any) -> None:
            if info.current_count > 0 and agent not in matched:
                matched.add(agent)
                print(f"matched {agent} {time.time_ns()}", flush=True)

        return callback

    for agent in range(count):
        events = SubscriptionEventCallbacks(matched=on_match(agent))
        node.create_subscription(
            EncodedBEV, topic(agent), lambda _: None, ENCODED_BEV_QOS, event_callbacks=events, raw=True
        )
    print("ready", flush=True)
    deadline = time.monotonic() + TIMEOUT_S
    while len(matched) < count and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.01)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0 if len(matched) == count else 1


def agent(index: int, started_ns: int) -> int:
    """Child: create agent ``index``'s node and publisher, print ``created K NS START_MS`` (the
    publisher's creation), then wait until stdin closes."""
    import rclpy
    from rclpy.node import Node
    from revqom.msg import EncodedBEV

    from revqom_nodes.ros.qos import ENCODED_BEV_QOS

    rclpy.init()
    node = Node(f"discovery_agent_{index}")
    created = time.time_ns()
    node.create_publisher(EncodedBEV, topic(index), ENCODED_BEV_QOS)
    print(f"created {index} {created} {(created - started_ns) / 1e6:.1f}", flush=True)
    sys.stdin.read()  # until the parent closes it: the participant stays until the count is done
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


def _child(*arguments: str, stdin: int | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", CHILD, *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=stdin,
        text=True,
    )


def _line(process: subprocess.Popen, what: str) -> list[str]:
    """The next line the child prints, split; RuntimeError with its exit status and stderr when
    it ended without one."""
    assert process.stdout is not None and process.stderr is not None
    line = process.stdout.readline()
    if not line:
        code = process.wait(timeout=TIMEOUT_S)
        raise RuntimeError(f"the discovery {what} exited ({code}) early: {process.stderr.read()[-2000:]}")
    return line.split()


def measure(count: int) -> dict[str, Any]:
    """One repeat: a receiver, then ``count`` agents at once -> per-agent times."""
    recv = _child("receiver", str(count))
    assert recv.stdout is not None
    if _line(recv, "receiver") != ["ready"]:
        raise RuntimeError("the discovery receiver did not start")
    agents = [_child("agent", str(k), str(time.time_ns()), stdin=subprocess.PIPE) for k in range(count)]
    created, start_ms = {}, []
    for process in agents:
        _, k, ns, ms = _line(process, "agent")
        created[int(k)] = int(ns)
        start_ms.append(float(ms))
    matched = {}
    for line in recv.stdout:
        _, k, ns = line.split()
        matched[int(k)] = int(ns)
    code = recv.wait(timeout=TIMEOUT_S)
    for process in agents:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(timeout=30)
    if code != 0 or len(matched) != count:
        raise RuntimeError(f"{count - len(matched)} of {count} agents were not matched within {TIMEOUT_S} s")
    return {
        "discovery_ms": [(matched[k] - created[k]) / 1e6 for k in range(count)],
        "all_matched_ms": (max(matched.values()) - min(created.values())) / 1e6,
        "start_ms": start_ms,
    }


def bench(counts: list[int], repeats: int) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for count in counts:
        runs = [measure(count) for _ in range(repeats)]
        discovery = np.concatenate([r["discovery_ms"] for r in runs])
        every = [r["all_matched_ms"] for r in runs]
        start = np.concatenate([r["start_ms"] for r in runs])
        rows[str(count)] = {
            "discovery_ms": {"p50": round(float(np.median(discovery)), 1),
                             "p95": round(float(np.percentile(discovery, 95)), 1),
                             "max": round(float(discovery.max()), 1)},
            "all_matched_ms": {"p50": round(float(np.median(every)), 1), "max": round(float(max(every)), 1)},
            "start_ms": {"p50": round(float(np.median(start)), 1), "max": round(float(start.max()), 1)},
            "repeats": repeats,
        }
    return {"rmw": os.environ.get("RMW_IMPLEMENTATION", "default"), "agents": rows}


def _run(args: argparse.Namespace) -> int:
    counts = [int(c) for c in args.agents.split(",") if c]
    if not counts or min(counts) < 1:
        raise SystemExit(f"--agents must list counts >= 1, got {args.agents!r}")
    print(json.dumps(bench(counts, args.repeats), indent=2))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "discovery", help="DDS discovery time of N agents' publishers to a fusion node's subscriptions",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--agents", default="2,5,8", help="agent counts, comma-separated")
    parser.add_argument("--repeats", type=int, default=3)
    parser.set_defaults(run=_run)


def main(argv: list[str]) -> int:
    if argv[0] == "receiver":
        return receiver(int(argv[1]))
    return agent(int(argv[1]), int(argv[2]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
