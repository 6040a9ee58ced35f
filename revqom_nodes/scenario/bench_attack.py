"""``revqom bench attack [--out DIR]``: issue 13's attacks against a real fusion node, as JSON.

Two ``fusion_node`` processes on loopback (DDS discovery on localhost), each with the bundled
model on the CPU: one enforcing authentication (a scenario key directory, ``scenario/keys.py``,
plus a revoked and an expired certificate of its CA), one without (``security.mode`` off, on
its own topics). This process sends a seeded synthetic scenario's frames to them, ego and
infrastructure encoded once with the agents' settings (``config/agent.param.yaml``; the payload
encoding ``--encoding``, by default the agents' ``codec.encoding``), signed
at sending time as the agent nodes sign them, one frame every ``FRAME_PERIOD_S`` with the wall
clock as stamp (the node checks stamps against its clock). Phases, one after the other, each
of ``--frames`` frames and then one attack-free closing frame whose FusionStatus gives the
phase's counters (differences to the phase before):

1. ``unsigned_pipeline``: the unsigned node, no attack (the unsigned pipeline's detections);
2. ``baseline``: the enforcing node, no attack (the signed pipeline's);
3. one phase per attack of ``scenario/attacks.py`` on the enforcing node, its forged messages
   sent around each legit frame.

Per attack: ``legit_frames``; ``legit_frames_fused_full`` (fused with the infrastructure's
same-stamp map, every cell); ``forged_sent``; ``forged_accepted`` (forged messages sent that
no rejection counter took: a message lost on the way counts too); ``legit_rejected_at_least``
(rejections beyond the forged messages sent: legit slices rejected, e.g. as ``clock_skew``
when a starved node reads them more than ``security.max_clock_skew_ms`` late);
``accepted_minus_legit_bytes`` (payload bytes the node accepted, FusionStatus
``bytes_received``, minus the legit ones sent: 0 when it took exactly the legit slices,
negative when legit slices were lost or late); ``forged_frames_published`` (detections published at a
forged ego stamp); ``detections_changed`` (legit frames whose detections differ in any bit
from the baseline's for the same frame, or are missing); ``rejected`` (counters by reason).
``overhead``: serialized EncodedBEV bytes signed and without the authenticator (and with the
1,100-byte slices used before signing), sign and verify time per slice (this process, the
trust library's ``Signer`` / ``Verifier``), and the nodes' FusionStatus ``decode_fuse_ms``
(median) in the baseline and unsigned phases; verification runs at reception, outside
``decode_fuse_ms``: ``verify_ms_per_frame`` is its cost for one frame's slices. ``flood``:
``scenario.flood.run_flood`` at ``--flood-rates``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from revqom_nodes.defaults import node_defaults
from revqom_nodes.scenario.attack_traffic import FRAME_PERIOD_S, NODES, AttackTraffic, start_fusion, stop

log = logging.getLogger(__name__)

DEFAULT_FRAMES = 6
SCENARIO_SEED = 20_260_013
UNSIGNED_PHASE = "unsigned_pipeline"  # the phase on the node without authentication
SLICE_BYTES_BEFORE_SIGNING = 1100  # agent output.slice_bytes before slices were signed
DEFAULT_FLOOD_RATES = "500,1000,2000,5000"


def parse_rates(text: str) -> list[int]:
    """``"500,1000"`` -> [500, 1000]; ``""`` -> []; ValueError for anything else."""
    rates = [int(part) for part in text.split(",") if part.strip()]
    if any(rate <= 0 for rate in rates):
        raise ValueError(f"flood rates must be positive, got {text!r}")
    return rates


def _scenario(model: Any, frames: int, out: Path) -> tuple[list[Any], list[Any], np.ndarray]:
    """Ego and infrastructure ``attacks.Sweep`` of ``frames`` synthetic frames, and the ego's
    ground-truth boxes (M, 7) of the first frame in its LiDAR frame."""
    from revqom_nodes.codec.wire import Encoding
    from revqom_nodes.data.dairv2x import DairV2XReader
    from revqom_nodes.data.synthetic import generate_dataset
    from revqom_nodes.runtime.encoder import AgentEncoder
    from revqom_nodes.scenario.attacks import Sweep

    generate_dataset(out / "dataset", frames, SCENARIO_SEED, scenes=1, overwrite=True, progress=False)
    reader = DairV2XReader(out / "dataset", "all")
    encoder = AgentEncoder(model, Encoding.PACKED)  # indices only: the bench packs them itself
    egos, infras = [], []
    for index in range(frames):
        frame = reader[index]
        for agent, sweeps, role in ((frame.agents[0], egos, 0), (frame.agents[1], infras, 1)):
            indices = encoder.encode(agent.points).indices
            sweeps.append(
                Sweep(agent.agent_id, role, f"{agent.agent_id}_lidar", agent.T_world_from_lidar, indices)
            )
    first = reader[0]
    return egos, infras, first.boxes_in(first.ego.T_world_from_lidar)


def _forger(model: Any, credentials: Any, ego: Any, truth: np.ndarray, encoding: str) -> Any:
    """The attacks' Forger: the phantom's patch 20 m ahead of the ego, holding the index triple
    of the ego's map at its nearest ground-truth car (the patch's own cell without one)."""
    from revqom_nodes.runtime.encoder import AgentEncoder, parse_encoding
    from revqom_nodes.scenario.attacks import PATCH_AHEAD_M, Forger, most_common_triple

    agent = node_defaults("agent")
    encoder = AgentEncoder(
        model,
        parse_encoding(encoding),
        agent["output.slice_bytes"],
        agent["output.interleave"],
    )
    grid, (height, width) = model.grid, model.grid.bev_shape
    row, col = (int(v) for v in grid.cell_of(PATCH_AHEAD_M, 0.0))
    rows, cols = grid.cell_of(truth[:, 0], truth[:, 1])
    inside = np.flatnonzero((rows >= 0) & (rows < height) & (cols >= 0) & (cols < width))
    if len(inside):
        nearest = inside[np.argmin(np.hypot(truth[inside, 0], truth[inside, 1]))]
        triple = ego.indices[:, rows[nearest], cols[nearest]]
    else:
        triple = ego.indices[:, row, col]
    return Forger(
        encoder,
        credentials,
        triple=triple,
        patch_cell=(row, col),
        erasure_triple=most_common_triple(ego.indices),
    )


def _counters(status: Any) -> dict[str, int]:
    return dict(zip(status.rejected_reasons, (int(c) for c in status.rejected_counts), strict=True))


def _fused_full(status: Any) -> bool:
    """Every agent fused, every cell, the partner's map of the ego's own stamp."""
    return (
        status is not None
        and all(status.fused)
        and all(f == 1.0 for f in status.cells_received_fraction)
        and all(a == 0.0 for a in status.message_age_ms)
    )


def _same(a: Any, b: Any) -> bool:
    """Two Detection3DArrays with bit-identical boxes, scores and fused agents."""
    from revqom_nodes.ros.conversions import msg_to_boxes

    if a is None or b is None or list(a.fused_agent_ids) != list(b.fused_agent_ids):
        return False
    (boxes_a, scores_a), (boxes_b, scores_b) = msg_to_boxes(a), msg_to_boxes(b)
    return np.array_equal(boxes_a, boxes_b) and np.array_equal(scores_a, scores_b)


def summarize_phase(
    bench: AttackTraffic,
    node: str,
    name: str,
    phase: dict[str, Any],
    reference: dict[str, Any] | None,
    before: Any,
) -> dict[str, Any]:
    """One phase's row; ``reference``: the phase whose detections count as unchanged (None: this
    one); ``before``: the node's closing status of its previous phase (None: the first)."""
    closing = bench.statuses[(node, phase["closing"])]
    counts, previous = _counters(closing), {} if before is None else _counters(before)
    rejected = {k: v - previous.get(k, 0) for k, v in counts.items() if v - previous.get(k, 0)}
    accepted_bytes = sum(closing.bytes_received) - (0 if before is None else sum(before.bytes_received))
    reference = reference or phase
    published = {stamp for (n, stamp) in bench.detections if n == node}
    return {
        "name": name,
        "legit_frames": len(phase["stamps"]),
        "legit_frames_fused_full": sum(_fused_full(bench.statuses.get((node, s))) for s in phase["stamps"]),
        "forged_sent": phase["forged_sent"],
        "forged_accepted": max(phase["forged_sent"] - sum(rejected.values()), 0),
        "legit_rejected_at_least": max(sum(rejected.values()) - phase["forged_sent"], 0),
        "accepted_minus_legit_bytes": int(accepted_bytes - phase["legit_bytes"]),
        "forged_frames_published": len(published & (phase["forged_stamps"] - bench.legit_stamps)),
        "detections_changed": sum(
            not _same(bench.detections.get((node, s)), bench.detections.get((node, r)))
            for s, r in zip(phase["stamps"], reference["stamps"], strict=True)
        ),
        "rejected": rejected,
        "decode_fuse_ms_p50": _median(
            [bench.statuses[(node, s)].decode_fuse_ms for s in phase["stamps"] if (node, s) in bench.statuses]
        ),
    }


def write_frames(bench: AttackTraffic, phases: dict[str, dict[str, Any]], path: Path) -> None:
    """One JSON line per frame sent (closing frames too): phase, stamp, and its FusionStatus and
    detections as the bench received them."""
    with open(path, "w", encoding="utf-8") as stream:
        for name, phase in phases.items():
            node = "unsigned" if name == UNSIGNED_PHASE else "signed"
            for stamp in [*phase["stamps"], phase["closing"]]:
                status, detections = bench.statuses.get((node, stamp)), bench.detections.get((node, stamp))
                record: dict[str, Any] = {
                    "phase": name,
                    "stamp_ns": stamp,
                    "closing": stamp == phase["closing"],
                }
                if status is not None:
                    record.update(
                        fused=list(status.fused),
                        cells_received_fraction=list(status.cells_received_fraction),
                        message_age_ms=[None if np.isnan(a) else a for a in status.message_age_ms],
                        decode_fuse_ms=status.decode_fuse_ms,
                        rejected=_counters(status),
                    )
                if detections is not None:
                    record["detections"] = len(detections.detections)
                stream.write(json.dumps(record) + "\n")


def _median(values: Sequence[float]) -> float | None:
    return round(float(np.median(values)), 3) if len(values) else None


def overhead(
    bench: AttackTraffic, model: Any, trust_dir: Path, sweeps: Sequence[Any], rows: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """Bytes, sign / verify time and fusion time of signed against unsigned slices; ``sweeps``:
    every agent frame sent."""
    from rclpy.serialization import serialize_message

    from revqom_nodes.ros.conversions import slice_to_encoded_bev
    from revqom_nodes.runtime.encoder import AgentEncoder
    from revqom_nodes.runtime.frames import signed_fields
    from revqom_nodes.trust import AUTHENTICATOR_BYTES, Authenticator, Verifier, load_trust_store

    sent = bench.legit_sent
    signed = np.array([len(serialize_message(slice_to_encoded_bev(m))) for m in sent], np.float64)
    per_frame = len(sent) / (2 * len({m.stamp_ns for m in sent}))  # slices per agent frame
    encoder = bench.forger.encoder
    before = AgentEncoder(model, encoder.encoding, SLICE_BYTES_BEFORE_SIGNING, encoder.interleave)
    old = [
        len(serialize_message(slice_to_encoded_bev(m))) - AUTHENTICATOR_BYTES
        for s in sweeps
        for m in before.messages(
            before.pack(s.indices),
            agent_id=s.agent_id,
            role=s.role,
            frame_id=s.frame_id,
            T_world_from_lidar=s.T_world_from_lidar,
        )
    ]
    bytes_signed_frame = float(signed.mean() * per_frame)
    bytes_unsigned_frame = bytes_signed_frame - AUTHENTICATOR_BYTES * per_frame
    bytes_before_frame = float(sum(old)) / len(sweeps)
    verifier = Verifier(load_trust_store(trust_dir))
    verify_s = []
    for message in sent:
        fields, authenticator = (
            signed_fields(message),
            Authenticator(message.signer_digest, message.signature),
        )
        start = time.perf_counter()
        verdict = verifier.verify(fields, authenticator)
        verify_s.append(time.perf_counter() - start)
        if not verdict.accepted:
            raise RuntimeError(f"a legit slice does not verify: {verdict.rejection}")
    sign_us, verify_us = (round(float(np.median(t)) * 1e6, 1) for t in (bench.sign_s, verify_s))
    signed_ms, unsigned_ms = (
        rows["baseline"]["decode_fuse_ms_p50"],
        rows[UNSIGNED_PHASE]["decode_fuse_ms_p50"],
    )
    return {
        "bytes_per_slice": {
            "signed": round(float(signed.mean()), 1),
            "unsigned": round(float(signed.mean()) - AUTHENTICATOR_BYTES, 1),
        },
        "bytes_per_frame": {
            "signed": round(bytes_signed_frame, 1),
            "unsigned": round(bytes_unsigned_frame, 1),
            "increase_percent": round(100 * (bytes_signed_frame / bytes_unsigned_frame - 1), 2),
            "unsigned_1100_byte_slices": round(bytes_before_frame, 1),
            "increase_percent_vs_1100_byte_slices": round(
                100 * (bytes_signed_frame / bytes_before_frame - 1), 2
            ),
            "slices_per_frame": round(per_frame, 2),
        },
        "sign_us": sign_us,
        "verify_us": verify_us,
        "verify_ms_per_frame": round(verify_us * 2 * per_frame / 1000, 3),
        "decode_fuse_ms_signed": signed_ms,
        "decode_fuse_ms_unsigned": unsigned_ms,
        "decode_fuse_ms_increase": None
        if None in (signed_ms, unsigned_ms)
        else round(signed_ms - unsigned_ms, 3),
    }


def flood(rates: Sequence[int], out: Path) -> list[dict[str, Any]]:
    """``scenario.flood.run_flood`` at ``rates`` (none: [])."""
    if not rates:
        return []
    from revqom_nodes.scenario.flood import run_flood

    return run_flood(list(rates), out / "flood")


def run_attack_bench(
    out: Path,
    *,
    model_path: Path,
    frames: int,
    attacks: Sequence[str],
    flood_rates: Sequence[int],
    encoding: str | None = None,
) -> dict[str, Any]:
    """Every phase (module docstring) with logs, keys and the scenario under ``out`` -> the JSON object."""
    import rclpy

    from revqom_nodes.runtime.model import load_runtime_model
    from revqom_nodes.runtime.security import load_signer
    from revqom_nodes.scenario.attacks import make_credentials

    started = time.perf_counter()
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    trust_dir = out / "keys"
    credentials = make_credentials(trust_dir, out / "attacker_keys", now=dt.datetime.now(dt.timezone.utc))
    logs = {node: out / f"fusion_{node}.log" for node in NODES}
    processes = {
        node: start_fusion(node, model_path, logs[node], trust_dir if node == "signed" else None)
        for node in NODES
    }
    codes: dict[str, int | None] = {}
    try:
        model = load_runtime_model(model_path, "cpu")
        egos, infras, truth = _scenario(model, frames + 1, out)
        encoding = encoding or node_defaults("agent")["codec.encoding"]
        forger = _forger(model, credentials, egos[0], truth, encoding)
        signers = {
            s.agent_id: load_signer(trust_dir, agent_id=s.agent_id, role=s.role) for s in (egos[0], infras[0])
        }
        rclpy.init()
        try:
            bench = AttackTraffic(rclpy, forger, signers)
            bench.wait_until_up(processes, logs)
            phases = {UNSIGNED_PHASE: bench.run_phase("unsigned", None, egos, infras)}
            codes["unsigned"] = stop(processes["unsigned"])
            for attack in (None, *attacks):
                phases[attack or "baseline"] = bench.run_phase("signed", attack, egos, infras)
        finally:
            rclpy.try_shutdown()
    finally:
        for node, process in processes.items():
            codes.setdefault(node, stop(process))
    rows = {
        UNSIGNED_PHASE: summarize_phase(bench, "unsigned", UNSIGNED_PHASE, phases[UNSIGNED_PHASE], None, None)
    }
    before = None
    for name, phase in phases.items():
        if name == UNSIGNED_PHASE:
            continue
        rows[name] = summarize_phase(bench, "signed", name, phase, phases["baseline"], before)
        before = bench.statuses[("signed", phase["closing"])]
    write_frames(bench, phases, out / "frames.jsonl")
    baseline, unsigned = phases["baseline"]["stamps"], phases[UNSIGNED_PHASE]["stamps"]
    equal_unsigned = sum(
        _same(bench.detections.get(("signed", s)), bench.detections.get(("unsigned", u)))
        for s, u in zip(baseline, unsigned, strict=True)
    )
    attack_rows = [rows[a] for a in attacks]
    return {
        "model": str(model_path),
        "frames_per_phase": frames,
        "frame_period_s": FRAME_PERIOD_S,
        "scenario_seed": SCENARIO_SEED,
        "note": (
            f"{frames} legit frames per phase (and one closing frame) on one enforcing fusion node, "
            "phases one after the other, to keep the whole bench to a few minutes on 2 CPU cores"
        ),
        "baseline": rows["baseline"],
        UNSIGNED_PHASE: rows[UNSIGNED_PHASE],
        "legit_detections_equal_unsigned": {"frames": len(baseline), "equal": int(equal_unsigned)},
        "attacks": attack_rows,
        "flood": flood(flood_rates, out),
        "overhead": overhead(bench, model, trust_dir, [*egos, *infras], rows),
        "done_when": {
            "forged_accepted_zero": all(
                r["forged_accepted"] == 0 and r["accepted_minus_legit_bytes"] <= 0 for r in attack_rows
            ),
            "legit_detections_equal_unsigned": equal_unsigned == len(baseline),
            "attacks_change_no_legit_detections": all(r["detections_changed"] == 0 for r in attack_rows),
            "stamp_attacks_cost_no_legit_frame": all(
                r["legit_frames_fused_full"] == r["legit_frames"]
                for r in attack_rows
                if r["name"].startswith("stamp_")
            ),
        },
        "node_exit_codes": codes,
        "seconds": round(time.perf_counter() - started, 1),
    }


def _run(args: argparse.Namespace) -> int:
    from revqom_nodes.scenario.attacks import ATTACKS
    from revqom_nodes.scenario.demo import resolve_model_path

    try:
        rates = parse_rates(args.flood_rates)
        attacks = (
            list(ATTACKS)
            if args.attacks is None
            else [a.strip() for a in args.attacks.split(",") if a.strip()]
        )
        unknown = sorted(set(attacks) - set(ATTACKS))
        if unknown:
            raise ValueError(f"unknown attacks {unknown}; valid: {list(ATTACKS)}")
        if args.frames < 2:
            raise ValueError(
                f"--frames must be at least 2 (the replay needs a frame before), got {args.frames}"
            )
        model_path = resolve_model_path(args.model)
    except (ValueError, FileNotFoundError) as exc:
        log.error("%s", exc)
        return 2
    with tempfile.TemporaryDirectory(prefix="revqom_attack_") as scratch:
        out = Path(args.out) if args.out else Path(scratch)
        out.mkdir(parents=True, exist_ok=True)
        result = run_attack_bench(
            out,
            model_path=model_path,
            frames=args.frames,
            attacks=attacks,
            flood_rates=rates,
            encoding=args.encoding,
        )
        text = json.dumps(result, indent=2)
        if args.out:
            (out / "attack.json").write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "attack",
        help="forged, replayed and tampered slices against a fusion node enforcing signatures",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--out", help="also write attack.json, the fusion nodes' logs, keys and scenario here"
    )
    parser.add_argument("--frames", type=int, default=DEFAULT_FRAMES, help="legit frames per phase")
    parser.add_argument(
        "--attacks", help="comma-separated attacks to run (default: every one of scenario/attacks.py)"
    )
    parser.add_argument(
        "--flood-rates",
        default=DEFAULT_FLOOD_RATES,
        help='forged slices per second of the flood runs, comma-separated ("" for none)',
    )
    parser.add_argument("--model", help="model file (default: the bundled model)")
    parser.add_argument(
        "--encoding",
        choices=("packed", "entropy"),
        help="the agents' payload encoding (default: codec.encoding)",
    )
    parser.set_defaults(run=_run)
