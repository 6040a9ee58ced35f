"""``revqom bench loss``: monolithic vs sliced transport under real packet loss, as JSON.

For each transport mode (``monolithic``; ``slices`` once per ``--interleave`` cell order) and
loss rate, the scenario of ``revqom demo`` (the same seeded
synthetic scenario, or ``--data``) runs through the test bed (``scenario/testbed.py``: the ego's
and the infrastructure's nodes in two network namespaces, a share of the infrastructure's IP
packets dropped before reassembly). Per run:

- ``mode``: ``monolithic`` or ``slices_interleaveS`` (the key of ``ap05_never_below_ego_only``);
- ``complete_share``: ego frames whose infrastructure map was fused whole;
- ``mean_cells_received``: mean share of the infrastructure's BEV cells fused per ego frame
  (FusionStatus.cells_received_fraction; a frame fused without the infrastructure, or with
  no output at all, counts 0);
- ``same_sweep``: the same two, counting only the infrastructure sweep paired with the ego's
  (less than half a sweep period apart): when that one is lost the fusion node takes a
  neighbouring sweep within ``fusion.max_age_ms``, which the two above count;
- ``ap``: AP@0.3/0.5/0.7 of the live detections (the demo's summary: ``scenario/report.py``,
  the protocol and range of ``revqom eval``);
- ``wire_bytes_per_frame`` / ``wire_packets_per_frame``: what the infrastructure put on the
  link (nft counters before the loss rule, IP headers and fragments included) between its
  first and last encoded frame, per frame; ``payload_bytes_per_frame``: its EncodedBEV
  payload per frame (AgentStatus.payload_bytes, from the recorder);
- ``frames_encoded_by_infrastructure``: its AgentStatus messages the recorder got (one per
  encoded sweep; reliable, so only the last ones may miss the end of a lossy run);
- ``packets_dropped_share``: measured share of its packets dropped once the loss was on.

References on the same frames, offline (``revqom eval`` path): the ego-only model
(``--ego-model``) and the cooperative model without loss. Needs root and nftables.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from revqom_nodes.defaults import node_defaults

log = logging.getLogger(__name__)

INFRA_AGENT_ID = "infrastructure"
EGO_ONLY_MODEL = "models/synthetic_gpu_ego_ctx.pt"
TRANSPORTS = ("monolithic", "slices")
SWEEP_PERIOD_MS = 100.0
SYNC_WAIT_PERIODS = 2.5  # sync wait in (scaled) sweep periods: under the fusion's 4 pending frames


def received_share(
    status: dict[str, Any] | None, agent_id: str = INFRA_AGENT_ID, *, max_age_ms: float | None = None
) -> float:
    """Share of ``agent_id``'s cells fused in one FusionStatus record (0 when not fused or absent).

    ``max_age_ms``: a fused map whose sweep is farther than this from the ego's counts 0 (the
    fusion node fuses a neighbouring sweep, up to ``fusion.max_age_ms`` away, when the paired one
    is lost). Before slices existed a status had no ``cells_received_fraction``: a fused map
    counts whole.
    """
    if status is None or agent_id not in status["agent_ids"]:
        return 0.0
    index = status["agent_ids"].index(agent_id)
    if not status["fused"][index]:
        return 0.0
    age_ms = status["message_age_ms"][index]
    if max_age_ms is not None and (age_ms is None or abs(age_ms) > max_age_ms):
        return 0.0
    fractions = status.get("cells_received_fraction")
    return 1.0 if not fractions else float(fractions[index])


def cell_shares(
    statuses: Sequence[dict[str, Any]], stamps_ns: Sequence[int], *, max_age_ms: float | None = None
) -> np.ndarray:
    """(F,) infrastructure cell share fused in each ego frame of ``stamps_ns`` (first status wins)."""
    by_stamp: dict[int, dict[str, Any]] = {}
    for record in statuses:
        by_stamp.setdefault(record["stamp_ns"], record)
    return np.array([received_share(by_stamp.get(s), max_age_ms=max_age_ms) for s in stamps_ns], np.float64)


def wire_per_frame(
    samples: Sequence[tuple[int, Any]], sent_ns: Sequence[int]
) -> tuple[float | None, float | None]:
    """(bytes, packets) on the link per frame between the first and last frame sent.

    ``samples``: (wall ns, LinkCounters) in time order; ``sent_ns``: the sender's publish time
    of each frame's status. Counters are interpolated linearly at those two times.
    """
    if len(sent_ns) < 2 or len(samples) < 2:
        return None, None
    times = np.array([t for t, _ in samples], np.float64)
    first, last = float(min(sent_ns)), float(max(sent_ns))
    frames = len(sent_ns) - 1
    per_frame = []
    for column in ("bytes", "packets"):
        values = np.array([getattr(c, column) for _, c in samples], np.float64)
        per_frame.append(float(np.interp(last, times, values) - np.interp(first, times, values)) / frames)
    return per_frame[0], per_frame[1]


def dropped_share(samples: Sequence[tuple[int, Any]], start_ns: int | None, final: Any) -> float | None:
    """Share of the infrastructure's packets dropped from ``start_ns`` (the loss switched on) to
    the end (``final`` counters); the counters at ``start_ns`` are interpolated from ``samples``."""
    if start_ns is None:
        return None
    times = np.array([t for t, _ in samples], np.float64)
    packets = final.packets
    if len(samples):
        packets -= float(np.interp(start_ns, times, [c.packets for _, c in samples]))
    return final.dropped_packets / packets if packets > 0 else None


def run_name(transport: str, interleave: int) -> str:
    """``monolithic`` or ``slices_interleaveS``: a transport mode of the JSON's rows."""
    return "monolithic" if transport == "monolithic" else f"slices_interleave{interleave}"


def run_metrics(run: Any, truth: Sequence[Any], *, range_m: Sequence[float], channels: int) -> dict[str, Any]:
    """One test-bed run (``TestbedRun``) against the ground truth -> its row of the JSON."""
    from revqom_nodes.scenario.report import RunEvents, summarize_run

    config = run.config
    row: dict[str, Any] = {
        "transport": config.transport,
        "interleave": config.interleave,
        "mode": run_name(config.transport, config.interleave),
        "loss": config.loss,
        "frames": len(truth),
    }
    if not run.events_path.is_file():
        log.error("the recorder wrote nothing (%s); see %s", run.events_path, run.log_path)
        return {**row, "launch_status": run.status, "error": "no recorder output"}
    events = RunEvents.load(run.events_path)
    summary = summarize_run(events, truth, range_m=range_m, channels=channels)
    stamps = [f.stamp_ns for f in truth]
    shares = cell_shares(events["fusion_status"], stamps)
    own = cell_shares(events["fusion_status"], stamps, max_age_ms=SWEEP_PERIOD_MS / 2)
    infra = [r for r in events["agent_status"] if r["agent_id"] == INFRA_AGENT_ID]
    wire_bytes, wire_packets = wire_per_frame(run.samples, [r["source_ns"] for r in infra])
    return {
        **row,
        "slice_bytes": config.slice_bytes,
        "complete_share": float(np.mean(shares >= 1.0)),
        "mean_cells_received": float(np.mean(shares)),
        "same_sweep": {
            "complete_share": float(np.mean(own >= 1.0)),
            "mean_cells_received": float(np.mean(own)),
        },
        "ap": summary["ap"],
        "wire_bytes_per_frame": wire_bytes,
        "wire_packets_per_frame": wire_packets,
        "payload_bytes_per_frame": float(np.mean([r["payload_bytes"] for r in infra])) if infra else None,
        "frames_encoded_by_infrastructure": len(infra),
        "frames_with_detections": summary["frames_with_detections_message"],
        "packets_dropped_share": dropped_share(run.samples, run.loss_started_ns, run.counters),
        "rejected": {k: v for k, v in summary["rejected"].items() if v},
        "launch_status": run.status,
    }


def _references(frames: list[Any], model: Path, ego_model: Path) -> dict[str, Any]:
    """Offline AP (``revqom eval`` path) of the ego-only model and of ``model`` without loss."""
    from revqom_nodes.evaluation.runner import evaluate_model
    from revqom_nodes.model_file import load_model

    out = {}
    for key, path in (("ego_only", ego_model), ("offline_cooperative", model)):
        result = evaluate_model(load_model(path, "cpu"), frames, name=path.stem, progress=False)
        out[key] = {"model": str(path), "ap": result["ap"]}
    return out


def _parse_list(text: str, kind: type, name: str) -> list:
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--{name}: cannot read '{text}'") from None
    if not values:
        raise argparse.ArgumentTypeError(f"--{name}: give at least one value")
    return values


def _run(args: argparse.Namespace) -> int:
    from revqom_nodes.data.bag import convert_to_bag
    from revqom_nodes.data.dairv2x import DairV2XReader
    from revqom_nodes.evaluation.runner import eval_range
    from revqom_nodes.launcher.substitutions import LaunchError
    from revqom_nodes.model_file import ModelFileError
    from revqom_nodes.scenario.demo import resolve_model_path, runtime_model_config, scenario_dataset
    from revqom_nodes.scenario.report import ground_truth
    from revqom_nodes.scenario.testbed import TestbedConfig, run_testbed
    from revqom_nodes.scenario.testbed_net import TestbedError, check_requirements
    from revqom_nodes.share import package_share_directory

    started = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        losses = _parse_list(args.loss, float, "loss")
        interleaves = _parse_list(args.interleave, int, "interleave")
        transports = _parse_list(args.transport, str, "transport")
        unknown = set(transports) - set(TRANSPORTS)
        if unknown:
            raise argparse.ArgumentTypeError(f"--transport: unknown {sorted(unknown)} (valid: {TRANSPORTS})")
        check_requirements()
        model = resolve_model_path(args.model)
        ego_model = Path(args.ego_model or package_share_directory("revqom") / EGO_ONLY_MODEL)
        config = runtime_model_config(model)
        root, split = scenario_dataset(args, out)
    except (argparse.ArgumentTypeError, FileNotFoundError, ValueError, ModelFileError, TestbedError) as exc:
        log.error("%s", exc)
        return 1
    bag = out / "bag"
    shutil.rmtree(bag, ignore_errors=True)
    convert_to_bag(root, bag, split=split, progress=False)
    reader = DairV2XReader(root, split)
    frames = [reader[i] for i in range(len(reader))]
    truth = ground_truth(frames)
    range_m, note = eval_range(config.grid)
    sync_wait_ms = args.sync_wait_ms or SYNC_WAIT_PERIODS * SWEEP_PERIOD_MS / args.rate
    runs = [
        (transport, interleave, loss)
        for transport in transports
        for interleave in (interleaves if transport == "slices" else [1])
        for loss in losses
    ]
    rows = []
    for transport, interleave, loss in runs:
        mode = run_name(transport, interleave)
        run_config = TestbedConfig(
            bag=bag,
            model=model,
            out_dir=out / "runs" / f"{mode}_loss{loss:g}",
            loss=loss,
            slice_bytes=args.slice_bytes if transport == "slices" else 0,
            interleave=interleave,
            rate=args.rate,
            sync_wait_ms=sync_wait_ms,
            encoding=args.encoding,
            device=args.device,
            threads=args.threads,
        )
        try:
            run = run_testbed(run_config)
        except (TestbedError, LaunchError, ValueError) as exc:
            log.error("%s at loss %g: %s", transport, loss, exc)
            return 1
        rows.append(run_metrics(run, truth, range_m=range_m, channels=config.backbone.bev_channels))
        log.info("%s", json.dumps(rows[-1]))
    references = _references(frames, model, ego_model)
    ego_ap = references["ego_only"]["ap"]["0.5"]
    result = {
        "model": str(model),
        "data": str(root),
        "split": split,
        "frames": len(truth),
        "rate": args.rate,
        "sync_wait_ms": sync_wait_ms,
        "encoding": args.encoding,
        "slice_bytes": args.slice_bytes,
        "interleave": interleaves,
        "eval_range_m": list(range_m),
        "eval_range_note": note,
        **references,
        "runs": rows,
        "ap05_never_below_ego_only": {
            name: all(r.get("ap", {}).get("0.5", -1.0) >= ego_ap for r in rows if r["mode"] == name)
            for name in dict.fromkeys(r["mode"] for r in rows)
        },
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out / "loss.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    return 0 if all(r.get("launch_status") == 0 for r in rows) else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    from revqom_nodes.scenario.demo import BUNDLED_MODEL, DEMO_SEED

    parser = subparsers.add_parser(
        "loss",
        help="monolithic vs sliced EncodedBEV under real packet loss (network namespaces; needs root)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--loss", default="0,0.1,0.3", help="per-packet loss shares, comma-separated")
    parser.add_argument("--transport", default="monolithic,slices", help="monolithic and/or slices")
    parser.add_argument(
        "--slice-bytes", type=int, default=node_defaults("agent")["output.slice_bytes"],
        help="slice payload budget, bytes (default: the agent node's output.slice_bytes: one IP packet)",
    )
    parser.add_argument(
        "--interleave", default="2",
        help="cell orders of the slices, comma-separated (1: row-major; s: s x s sub-grids), one run each",
    )
    parser.add_argument("--frames", type=int, default=40, help="synthetic frames (not with --data)")
    parser.add_argument("--seed", type=int, default=DEMO_SEED, help="seed of the synthetic scenario")
    parser.add_argument("--data", help="DAIR-V2X-C root (default: generate the demo's synthetic scenario)")
    parser.add_argument("--split", choices=("train", "val", "all"), default="val", help="split of --data")
    parser.add_argument("--model", help=f"cooperative model file (default: the bundled {BUNDLED_MODEL})")
    parser.add_argument("--ego-model", help=f"ego-only reference model (default: {EGO_ONLY_MODEL})")
    parser.add_argument("--encoding", choices=("packed", "entropy"), default="packed")
    parser.add_argument("--rate", type=float, default=0.25, help="replay speed; low enough for the CPU")
    parser.add_argument(
        "--sync-wait-ms", type=float, default=0.0, help="fusion sync wait; 0: 2.5 sweep periods at --rate"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, default=1, help="PyTorch CPU threads per node")
    parser.add_argument("--out", default="out/bench_loss", help="output directory")
    parser.set_defaults(run=_run)
