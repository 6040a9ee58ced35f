"""``run_flood``: how a fusion node keeps fusing while a keyless attacker floods the
infrastructure topic with forged slices (issue 13; docs/security.md, "Flood resistance").

One real ``fusion_node`` process on loopback (CPU, enforcing signatures, keys made in
``out_dir/keys``) gets, from this process, a legit signed ego and infrastructure frame every
``frame_period_s`` (random indices of the model's grid, each agent's map in its
``output.slice_bytes`` slices, stamped with the wall clock; the agents' 0.1 s by default, longer
where the machine cannot fuse 10 frames a second even without a flood: the row of rate 0
tells) and, per rate, from a child process
(``python -m revqom_nodes.scenario.flood flood ...``), forged slices as fast as asked: the
worst case for the receiver, the legit infrastructure certificate's digest copied from the
wire, a fresh stamp and a random signature each (random ``r`` and ``s``: a full ECDSA
verification, 87 µs, where a zero signature is refused in 9), so that only the verification
refuses them. Per rate (0: no flood), one row:

| key | meaning |
|---|---|
| ``rate_per_s`` | forged slices per second asked for |
| ``achieved_rate_per_s`` | published per second by the flooder (one Python process; may fall short) |
| ``legit_frames`` | legit frames sent during the flood |
| ``legit_fused_full_fraction`` | share of them fused with every cell of the infrastructure map |
| ``legit_fused_fraction`` | share of them fused at all (a FusionStatus came back) |
| ``infrastructure_cells_fraction_mean`` | over those, the mean share of infrastructure cells fused |
| ``latency_ms_p50`` / ``_p95`` | ego stamp (wall clock at sending) -> detections received |
| ``rss_growth_mb`` | fusion node resident memory (its fusion process included) after the flood minus before |
| ``rejected_per_s`` | rejections the node counted per second, all reasons, flood start to last legit frame |
| ``rejected`` | the node's rejections during the flood, by reason (non-zero ones) |
| ``frame_period_s`` | between legit frames |

``rejection_costs``: what rejecting one slice costs the receiver's core alone (no ROS, one
thread, ``Inbox.screen`` and, for what passes it, ``Inbox.accept``), per kind of forgery; and
``flood_reception``: what the reception callback does with one of the flood's forged slices
before the verify worker ever sees it (``cdr_to_slice`` of the serialized slice,
``Inbox.screen``, ``Intake.offer`` into a full queue, which pushes one out), rclpy's own take
not included.

Run on its own: ``python -m revqom_nodes.scenario.flood --out DIR [--rates 500 1000 ...]``
prints ``{"flood": rows, "rejection_throughput_per_s": ..., "rejection_costs": ...}``
(``rejection_throughput_per_s``: the largest ``rejected_per_s`` of the node).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from revqom_nodes.defaults import node_defaults
from revqom_nodes.runtime.frames import SIGNATURE_BYTES
from revqom_nodes.scenario.demo import resolve_model_path
from revqom_nodes.scenario.keys import SCENARIO_AGENTS, scenario_keys

log = logging.getLogger(__name__)

FLOOD_RATES = [500, 1000, 2000, 5000]  # forged slices per second (issue 13)
FRAME_PERIOD_S = 0.1  # legit frames: the agents' 10 Hz sweeps
DURATION_S = 10.0  # legit frames are sent this long per rate
SETTLE_S = 1.5  # after the last legit frame, for its detections to arrive
STARTUP_TIMEOUT_S = 300.0  # the node imports torch and loads the model (slow on a loaded machine)
FLOOD_PACE_S = 0.001  # the flooder publishes what is due, then sleeps this long
EGO_TOPIC, INFRA_TOPIC = "/vehicle/encoded_bev", "/infrastructure/encoded_bev"
STATUS_TOPIC, DETECTIONS_TOPIC = "/flood/fusion_status", "/flood/detections"
SLICE_BYTES = node_defaults("agent")["output.slice_bytes"]


def run_flood(
    rates: list[int],
    out_dir: Path,
    *,
    model: Path | None = None,
    duration_s: float = DURATION_S,
    frame_period_s: float = FRAME_PERIOD_S,
) -> list[dict[str, Any]]:
    """One row per rate in ``rates`` (forged slices per second; 0: none), see the module
    docstring; keys, the forged message and the node's log go to ``out_dir``."""
    import rclpy

    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = resolve_model_path(str(model) if model else None)
    keys = scenario_keys(out_dir / "keys")
    legit = _LegitSender(model_path, keys)
    forged_path = out_dir / "forged.cdr"
    forged_path.write_bytes(legit.forged())
    log_path = out_dir / "fusion.log"
    node_process = _start_fusion_node(model_path, keys, log_path)
    context = rclpy.Context()
    rclpy.init(context=context)
    rows = []
    try:
        probe = _Probe(context, legit, frame_period_s)
        probe.wait_for(node_process, log_path)
        probe.send_frames(2.0)  # warm-up: the first frames pay for lazy initialisation
        for rate in rates:
            rows.append(probe.measure(rate, duration_s, node_process.pid, forged_path))
            log.info("flood %s", rows[-1])
        probe.node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
        node_process.send_signal(signal.SIGINT)
        try:
            node_process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            node_process.kill()
    return rows


def rejection_costs(out_dir: Path, *, model: Path | None = None, repeats: int = 2000) -> dict[str, Any]:
    """Median cost (µs) and rate (per second, one thread) of rejecting one infrastructure slice
    in the fusion node's core, per forgery: ``unsigned``, ``unknown_signer`` (another CA's
    key), ``bad_signature`` (the legit digest, signature zeroed: a full verification) and
    ``replayed`` (a legit slice received again); keys go to ``out_dir``."""
    from dataclasses import replace

    from revqom_nodes.runtime.inbox import Inbox
    from revqom_nodes.runtime.security import SecurityMode, SliceGuard, sign_slice
    from revqom_nodes.runtime.validation import Expectations, Rejected

    model_path = resolve_model_path(str(model) if model else None)
    keys = scenario_keys(out_dir / "keys")
    legit = _LegitSender(model_path, keys)
    stranger = _LegitSender(model_path, scenario_keys(out_dir / "stranger_keys"))
    skew_ms = 60_000.0  # the measurement's slices keep the stamp they were made with
    guard = SliceGuard.load(keys, mode=SecurityMode.ENFORCE, max_clock_skew_ms=skew_ms, clock_ns=time.time_ns)
    inbox = Inbox(
        Expectations.of(legit.encoder.model),
        agent_ids=list(SCENARIO_AGENTS),
        ego_agent_id="vehicle",
        max_age_ms=150.0,
        guard=guard,
    )
    stamp = time.time_ns()
    first = legit.messages("infrastructure", stamp, 1)[0]
    inbox.receive(first, "infrastructure")
    later = replace(first, stamp_ns=stamp + 1_000_000, sequence=2)  # a new sweep: only its signer can tell
    forgeries = {
        "unsigned": replace(later, signer_digest=bytes(8), signature=bytes(64)),
        "unknown_signer": sign_slice(later, stranger.signers["infrastructure"]),
        "bad_signature": replace(later, signature=np.random.default_rng(0).bytes(SIGNATURE_BYTES)),
        "replayed": first,
    }
    costs = {"flood_reception": _flood_reception_cost(inbox, legit.forged(), repeats)}
    for reason, message in forgeries.items():
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            try:
                inbox.accept(inbox.screen(message, "infrastructure"))
            except Rejected as rejected:
                if rejected.reason.value != reason:
                    raise RuntimeError(f"the {reason} forgery was rejected as {rejected}") from None
            else:
                raise RuntimeError(f"the {reason} forgery was accepted")
            seconds.append(time.perf_counter() - start)
        median_us = float(np.median(seconds)) * 1e6
        costs[reason] = {"us_per_message": round(median_us, 1), "per_s": round(1e6 / median_us)}
    return costs


def _flood_reception_cost(inbox: Any, forged: bytes, repeats: int) -> dict[str, float]:
    """Median µs (and rate per second) of the reception callback's work on ``forged``, the
    flood's serialized slice, offered into a full intake queue as under a flood."""
    from revqom_nodes.ros.conversions import cdr_to_slice
    from revqom_nodes.runtime.intake import Intake

    fusion = node_defaults("fusion")
    intake: Intake[Any] = Intake(
        depth=fusion["fusion.intake_depth"],
        new_sweep_slices_per_s=fusion["fusion.intake_new_sweep_slices_per_s"],
    )
    seconds = []
    for _ in range(intake.depth + repeats):
        start = time.perf_counter()
        screened = inbox.screen(cdr_to_slice(forged, time.time_ns()), "infrastructure")
        intake.offer(screened.sender, screened.sweep, screened)
        seconds.append(time.perf_counter() - start)
    median_us = float(np.median(seconds[intake.depth :])) * 1e6  # the queue full
    return {"us_per_message": round(median_us, 1), "per_s": round(1e6 / median_us)}


def _start_fusion_node(model_path: Path, keys: Path, log_path: Path) -> subprocess.Popen:
    parameters = [
        f"model.path:={model_path}",
        "device:=cpu",
        f"security.trust_dir:={keys}",
        f"output.status_topic:={STATUS_TOPIC}",
        f"output.detections_topic:={DETECTIONS_TOPIC}",
        "output.markers_topic:=/flood/markers",
    ]
    with open(log_path, "w") as node_log:
        return subprocess.Popen(
            [sys.executable, "-m", "revqom_nodes.ros.fusion_node", "--ros-args", "-r", "__node:=fusion"]
            + [token for parameter in parameters for token in ("-p", parameter)],
            stdout=node_log,
            stderr=subprocess.STDOUT,
        )


class _LegitSender:
    """Each agent's map (random indices of the model's grid, fixed seed) in signed slices."""

    def __init__(self, model_path: Path, keys: Path) -> None:
        from revqom_nodes.runtime.encoder import AgentEncoder
        from revqom_nodes.runtime.model import load_runtime_model
        from revqom_nodes.runtime.security import load_signer

        model = load_runtime_model(model_path, "cpu")
        height, width = model.grid.bev_shape
        shape = (model.settings.num_quantizers, height, width)
        rng = np.random.default_rng(0)
        self.encoder = AgentEncoder(model, slice_bytes=SLICE_BYTES)
        codebook_size = model.settings.codebook_size
        self.slices = {a: self.encoder.pack(rng.integers(0, codebook_size, shape)) for a in SCENARIO_AGENTS}
        self.signers = {a: load_signer(keys, agent_id=a, role=int(r)) for a, r in SCENARIO_AGENTS.items()}
        self.poses = {"vehicle": np.eye(4), "infrastructure": np.eye(4)}
        self.poses["infrastructure"][:3, 3] = (30.0, 5.0, 6.0)

    def messages(self, agent_id: str, stamp_ns: int, sequence: int) -> list:
        """The agent's signed slices of one frame (``ReceivedSlice``)."""
        return self.encoder.messages(
            self.slices[agent_id],
            agent_id=agent_id,
            role=int(SCENARIO_AGENTS[agent_id]),
            stamp_ns=stamp_ns,
            sequence=sequence,
            frame_id=f"{agent_id}_lidar",
            T_world_from_lidar=self.poses[agent_id],
            signer=self.signers[agent_id],
        )

    def forged(self) -> bytes:
        """A serialized infrastructure slice with the legit signer's digest and a signature of
        zeros, its last ``SIGNATURE_BYTES`` bytes (the flooder writes a random one each time)."""
        from dataclasses import replace

        from rclpy.serialization import serialize_message

        from revqom_nodes.ros.conversions import slice_to_encoded_bev

        (first, *_) = self.messages("infrastructure", time.time_ns(), 0)
        return serialize_message(slice_to_encoded_bev(replace(first, signature=bytes(64))))


class _Probe:
    """This process's ROS side: legit publishers, the node's statuses and detections."""

    def __init__(self, context: Any, legit: _LegitSender, frame_period_s: float) -> None:
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from revqom.msg import Detection3DArray, EncodedBEV, FusionStatus

        from revqom_nodes.ros.qos import ENCODED_BEV_QOS, RESULT_QOS

        self.legit, self.frame_period_s = legit, frame_period_s
        self.node = Node("flood_probe", context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.publishers = {
            "vehicle": self.node.create_publisher(EncodedBEV, EGO_TOPIC, ENCODED_BEV_QOS),
            "infrastructure": self.node.create_publisher(EncodedBEV, INFRA_TOPIC, ENCODED_BEV_QOS),
        }
        self.statuses: dict[int, FusionStatus] = {}
        self.latest_status: FusionStatus | None = None
        self.arrival_ns: dict[int, int] = {}
        self.node.create_subscription(FusionStatus, STATUS_TOPIC, self._status, RESULT_QOS)
        self.node.create_subscription(Detection3DArray, DETECTIONS_TOPIC, self._detections, RESULT_QOS)
        self.sequence = 0

    def _status(self, msg: Any) -> None:
        self.statuses[msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec] = msg
        self.latest_status = msg

    def _detections(self, msg: Any) -> None:
        self.arrival_ns.setdefault(msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec, time.time_ns())

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=min(0.01, max(end - time.monotonic(), 0.0)))

    def wait_for(self, process: subprocess.Popen, log_path: Path) -> None:
        """Until the fusion node subscribes to both topics and publishes its statuses."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not (
            self.node.count_subscribers(EGO_TOPIC)
            and self.node.count_subscribers(INFRA_TOPIC)
            and self.node.count_publishers(STATUS_TOPIC)
        ):
            if process.poll() is not None:
                raise RuntimeError(f"the fusion node exited: {log_path.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the fusion node did not come up in {STARTUP_TIMEOUT_S:g} s")
            self.spin_for(0.2)
        self.spin_for(1.0)

    def send_frames(self, seconds: float) -> list[int]:
        """Legit frames every ``frame_period_s`` for ``seconds``: infrastructure, then ego; their stamps."""
        from revqom_nodes.ros.conversions import slice_to_encoded_bev

        stamps = []
        next_frame = time.monotonic()
        end = next_frame + seconds
        while next_frame < end:
            self.spin_for(max(next_frame - time.monotonic(), 0.0))
            stamp = time.time_ns()
            self.sequence += 1
            for agent_id in ("infrastructure", "vehicle"):
                for message in self.legit.messages(agent_id, stamp, self.sequence):
                    self.publishers[agent_id].publish(slice_to_encoded_bev(message))
            stamps.append(stamp)
            next_frame += self.frame_period_s
        return stamps

    def measure(self, rate: int, duration_s: float, pid: int, forged_path: Path) -> dict[str, Any]:
        """One row: legit frames for ``duration_s`` under a flood of ``rate`` forged slices/s."""
        self.spin_for(0.5)
        rss_before = _rss_mb(pid)
        flooder = None
        if rate > 0:
            flooder = _Flooder(forged_path, rate, duration_s + 2.0)
            while not flooder.started.is_set() and flooder.process.poll() is None:
                self.spin_for(0.05)
        counts_before, counted_from = self._counts(), time.monotonic()  # the flood starts
        if flooder is not None:
            self.spin_for(0.5)
        stamps = self.send_frames(duration_s)
        counts_after, counted_to = self._counts(), time.monotonic()
        achieved = flooder.finish() if flooder is not None else 0.0
        self.spin_for(SETTLE_S)
        rss_after = _rss_mb(pid)
        infra = 1  # FusionStatus lists the ego first
        full = [
            s
            for s in stamps
            if s in self.statuses
            and self.statuses[s].fused[infra]
            and self.statuses[s].cells_received_fraction[infra] == 1.0
        ]
        fused = [self.statuses[s] for s in stamps if s in self.statuses]
        latencies = [(self.arrival_ns[s] - s) / 1e6 for s in stamps if s in self.arrival_ns]
        rejected = {k: counts_after.get(k, 0) - counts_before.get(k, 0) for k in counts_after}
        return {
            "rate_per_s": rate,
            "frame_period_s": self.frame_period_s,
            "achieved_rate_per_s": round(achieved, 1),
            "legit_frames": len(stamps),
            "legit_fused_full_fraction": round(len(full) / max(len(stamps), 1), 3),
            "legit_fused_fraction": round(len(fused) / max(len(stamps), 1), 3),
            "infrastructure_cells_fraction_mean": round(
                float(np.mean([f.cells_received_fraction[infra] for f in fused])), 3) if fused else None,
            "latency_ms_p50": round(float(np.percentile(latencies, 50)), 1) if latencies else None,
            "latency_ms_p95": round(float(np.percentile(latencies, 95)), 1) if latencies else None,
            "rss_growth_mb": round(rss_after - rss_before, 1),
            "rejected_per_s": round(sum(rejected.values()) / (counted_to - counted_from), 1),
            "rejected": {k: v for k, v in rejected.items() if v},
        }

    def _counts(self) -> dict[str, int]:
        status = self.latest_status
        if status is None:
            return {}
        return dict(zip(status.rejected_reasons, status.rejected_counts, strict=True))


def _rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` and its children (the node's fusion process), MiB
    (Linux /proc)."""
    tasks = Path(f"/proc/{pid}/task").iterdir()
    children = [child for task in tasks for child in (task / "children").read_text().split()]
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024 + sum(_rss_mb(int(child)) for child in children)
    raise RuntimeError(f"no VmRSS for process {pid}")


class _Flooder:
    """The child process that publishes the forged slices; ``started`` once it publishes."""

    def __init__(self, forged_path: Path, rate: int, seconds: float) -> None:
        arguments = ["flood", str(forged_path), str(rate), str(seconds)]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "revqom_nodes.scenario.flood", *arguments],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.started = threading.Event()
        self.result: dict[str, float] = {}
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("flooding"):
                self.started.set()
            elif line.startswith("{"):
                self.result = json.loads(line)
        self.started.set()

    def finish(self) -> float:
        """Wait for the flooder's end; the rate it achieved (forged slices per second)."""
        self.process.wait(timeout=60)
        self._reader.join(timeout=5)
        return float(self.result.get("achieved_rate_per_s", 0.0))


def flood(forged_path: Path, rate: int, seconds: float) -> dict[str, float]:
    """Publish the serialized slice in ``forged_path`` on the infrastructure topic ``rate``
    times per second for ``seconds`` (once the fusion node subscribes), each with a fresh
    wall-clock stamp (bytes 4-12: the header's stamp in CDR) and random signature (the last
    ``SIGNATURE_BYTES``)."""
    import struct

    import rclpy
    from rclpy.node import Node
    from revqom.msg import EncodedBEV

    from revqom_nodes.ros.qos import ENCODED_BEV_QOS

    template = bytearray(forged_path.read_bytes())
    order = "<iI" if template[1] & 1 else ">iI"
    rclpy.init()
    node = Node("flooder")
    publisher = node.create_publisher(EncodedBEV, INFRA_TOPIC, ENCODED_BEV_QOS)
    while publisher.get_subscription_count() == 0:
        rclpy.spin_once(node, timeout_sec=0.05)
    print("flooding", flush=True)
    sent, start = 0, time.monotonic()
    while (elapsed := time.monotonic() - start) < seconds:
        for _ in range(int(elapsed * rate) - sent):
            sec, nanosec = divmod(time.time_ns(), 10**9)
            struct.pack_into(order, template, 4, sec, nanosec)
            template[-SIGNATURE_BYTES:] = os.urandom(SIGNATURE_BYTES)
            publisher.publish(bytes(template))
            sent += 1
        time.sleep(FLOOD_PACE_S)
    elapsed = time.monotonic() - start
    node.destroy_node()
    rclpy.try_shutdown()
    return {"published": sent, "achieved_rate_per_s": sent / elapsed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m revqom_nodes.scenario.flood", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    child = commands.add_parser("flood", help="the flooder child process")
    child.add_argument("forged", type=Path)
    child.add_argument("rate", type=int)
    child.add_argument("seconds", type=float)
    parser.add_argument("--out", type=Path, help="output folder (keys, forged slice, node log)")
    parser.add_argument("--rates", type=int, nargs="+", default=[0, *FLOOD_RATES])
    parser.add_argument("--model", type=Path, default=None, help="model file (default: the bundled one)")
    parser.add_argument("--duration-s", type=float, default=DURATION_S, help="legit frames sent per rate, s")
    parser.add_argument("--frame-period-s", type=float, default=FRAME_PERIOD_S, help="between legit frames")
    args = parser.parse_args(argv)
    if args.command == "flood":
        print(json.dumps(flood(args.forged, args.rate, args.seconds)), flush=True)
        return 0
    if args.out is None:
        parser.error("--out is required")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    costs = rejection_costs(args.out / "costs", model=args.model)
    rows = run_flood(
        args.rates, args.out, model=args.model, duration_s=args.duration_s, frame_period_s=args.frame_period_s
    )
    throughput = max((row["rejected_per_s"] for row in rows), default=0.0)
    result = {"flood": rows, "rejection_throughput_per_s": throughput, "rejection_costs": costs}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
