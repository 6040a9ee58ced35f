"""``revqom demo``: the whole multi-process scenario on a small scenario, then a summary.

Steps: (1) a seeded synthetic DAIR-V2X-C scenario (or ``--data ROOT``; ``--vehicles N --rsus M``
for more agents), (2) its ROS 2 bag, (3) ``launch/scenario.launch.xml`` through the project's
launch runner (replay, one agent node per agent, one fusion node per ego of ``--egos``, the
recorder) until the bag ends, signed: the demo makes its own keys (``scenario/keys.py``) and the
fusion nodes enforce authentication, (4) the summary: per ego, frames, detections,
AP@0.3/0.5/0.7 (the ``revqom eval`` protocol and range, ``revqom eval --ego``) and latency
p50/p95 per stage; bytes per agent per frame (packed and entropy) against raw float32 features.
The first ego's metrics are also the top level of ``metrics.json``, ``egos`` has each ego's.
``--absent infrastructure`` starts no agent node for that agent (a unit that is down): the
fusion nodes still expect it and fuse the ego alone.

Partners under V2X conditions: ``--partner-delay-ms D`` and ``--pose-noise XY_M,YAW_DEG``
(``--noise-seed``) set the replay's ``replay.partner_delay_ms``, ``replay.pose_noise`` and
``replay.noise_seed`` (one ego, the bag's first vehicle); the summary then adds the partners'
ages when fused and, with a delay, the AP on the frames ``revqom eval --delay-ms D`` keeps.
The fusion node waits ``--sync-wait-ms`` for a late partner (default: long enough for a sweep
period and the encoding at the replay's rate, which absorbs a delay of up to about 1.5
periods); shorter, it fuses the partner's newest map when the wait ends.

Outputs under ``--out``: ``metrics.json``, ``events.jsonl`` (the recorder's log),
``launch.log`` (every node's output), ``bev/frame_*.png``, ``bev_montage.png``, ``bev.gif``,
the generated ``dataset/`` and ``bag/``, and ``keys/`` (the run's CA and agent keys).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from revqom_nodes.evaluation.cli import parse_delay_ms, parse_pose_noise

log = logging.getLogger(__name__)

DEMO_SEED = 20_260_001  # a scenario no training run uses (training seeds are small integers)
DEFAULT_FRAMES = 24
BUNDLED_MODEL = "models/synthetic_k64_ctx_partner_dropout.pt"
ENCODINGS = ("packed", "entropy")  # the agent node's codec.encoding values
DEMO_ENCODING = "entropy"  # the demo's agents' (and `revqom bench pipeline`'s) payload encoding
NODE_RATE = 0.75  # default replay speed x (agent nodes + fusion nodes): 0.25 for 1 + 1, so that
#   every sweep is encoded and fused in time on a 2-core CPU (a fusion node that falls behind
#   pairs its ego frames with whatever partner sweeps its buffers still hold)
PICTURES = 4  # frames rendered as separate PNGs (evenly spaced); the GIF has every frame
GIF_FRAMES = 40


def resolve_model_path(requested: str | None) -> Path:
    from revqom_nodes.share import package_share_directory

    path = Path(requested) if requested else package_share_directory("revqom") / BUNDLED_MODEL
    if not path.is_file():
        hint = "" if requested else " (the bundled model; train one with `revqom train` or pass --model)"
        raise FileNotFoundError(f"model file {path} does not exist{hint}")
    return path


def runtime_model_config(model: Path) -> Any:
    """The model file's DetectorConfig, refused early (with the reason) when the runtime cannot run it."""
    from revqom_nodes.model_file import read_model_file
    from revqom_nodes.perception.config import DetectorConfig

    config = DetectorConfig.from_dict(read_model_file(model)["config"]["model"])
    if config.mode != "cooperative" or config.codec is None:
        raise ValueError(
            f"{model}: the runtime sends codebook indices: it needs a cooperative model with a "
            f"codec (this one: mode {config.mode}, codec {'set' if config.codec else 'none'})"
        )
    return config


def scenario_dataset(args: argparse.Namespace, out: Path) -> tuple[Path, str]:
    """The DAIR-V2X-C root and split to run on (generating the synthetic one when needed)."""
    if args.data:
        return Path(args.data), args.split
    from revqom_nodes.data.synthetic import SynthConfig, generate_dataset

    root = out / "dataset"
    log.info(
        "generating a synthetic scenario: %d frames, %d vehicles + %d roadside units, seed %d -> %s",
        args.frames, args.vehicles, args.rsus, args.seed, root,
    )
    config = SynthConfig(vehicles=args.vehicles, rsus=args.rsus)
    generate_dataset(root, args.frames, args.seed, scenes=1, overwrite=True, config=config)
    return root, "all"


def default_sync_wait_ms(rate: float) -> float:
    """The demo's ``fusion.sync_wait_ms`` at replay speed ``rate``: a sweep period and a half of
    wall time plus encoding time, so that every frame is fused with the partners' sweeps of its
    pair, as offline."""
    return max(500.0, 100.0 / rate * 1.5 + 1000.0)


def _run_scenario(args: argparse.Namespace, bag: Path, model: Path, out: Path, egos: list[str]) -> int:
    from revqom_nodes.data.agents_launch import bag_agents, write_agents_launch
    from revqom_nodes.launcher.file import find_launch_file, parse_launch_file
    from revqom_nodes.launcher.runner import run
    from revqom_nodes.scenario.keys import scenario_keys

    sync_wait_ms = args.sync_wait_ms or default_sync_wait_ms(args.rate)
    perturbation = {
        "partner_delay_ms": None if args.partner_delay_ms is None else str(args.partner_delay_ms),
        "pose_noise": None if args.pose_noise is None else f"[{args.pose_noise[0]}, {args.pose_noise[1]}]",
        "noise_seed": None if args.noise_seed is None else str(args.noise_seed),
    }
    arguments = {
        "bag": str(bag.resolve()),
        "model": str(model.resolve()),
        "rate": str(args.rate),
        "encoding": args.encoding,
        "device": args.device,
        "threads": str(args.threads),
        "record": "true",
        "out_dir": str(out.resolve()),
        "sync_wait_ms": str(sync_wait_ms),
        "exit_delay": str(sync_wait_ms / 1e3 + 3.0),
        "trust_dir": str(scenario_keys(out / "keys", bag_agents(bag)).resolve()),
        "agents": str(write_agents_launch(bag, egos, out / "agents.launch.xml", args.absent).resolve()),
        **{name: value for name, value in perturbation.items() if value is not None},
    }
    nodes = parse_launch_file(find_launch_file("scenario.launch.xml"), arguments)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    log_path = out / "launch.log"
    log.info(
        "launching %s (%d nodes, rate %g); node output in %s",
        "scenario.launch.xml",
        len(nodes),
        args.rate,
        log_path,
    )
    with open(log_path, "w", encoding="utf-8") as stream:
        return run(nodes, stdout=stream, stderr=stream)


def _pictures(
    frames: list[Any], detections: dict[int, Any], range_m: list[float], out: Path
) -> dict[str, str]:
    import numpy as np

    from revqom_nodes.defaults import node_defaults
    from revqom_nodes.geometry import invert, transform_points
    from revqom_nodes.scenario.render import render_bev, write_gif, write_montage

    min_score = float(node_defaults("fusion")["output.display_min_score"])
    paths = []
    step = max(1, -(-len(frames) // GIF_FRAMES))
    for frame in frames[::step]:
        T_ego_from_world = invert(frame.ego.T_world_from_lidar)
        points = [transform_points(T_ego_from_world @ a.T_world_from_lidar, a.points) for a in frame.agents]
        record = detections.get(frame.ego.timestamp_us * 1000, {"boxes": [], "scores": []})
        boxes = np.asarray(record["boxes"], np.float64).reshape(-1, 7)
        drawn = int(np.sum(np.asarray(record["scores"]) >= min_score))
        title = (
            f"frame {frame.frame_id}: {drawn} detections scored >= {min_score:g} (of {len(boxes)}), "
            f"{len(frame.boxes_world)} ground-truth boxes"
        )
        paths.append(
            render_bev(
                out / "bev" / f"frame_{frame.frame_id}.png",
                points,
                frame.boxes_in(frame.ego.T_world_from_lidar),
                boxes,
                np.asarray(record["scores"]),
                range_m=range_m,
                title=title,
                min_score=min_score,
            )
        )
    chosen = [
        paths[round(i * (len(paths) - 1) / max(PICTURES - 1, 1))] for i in range(min(PICTURES, len(paths)))
    ]
    return {
        "frames": str(out / "bev"),
        "montage": str(write_montage(chosen, out / "bev_montage.png")),
        "gif": str(write_gif(paths, out / "bev.gif")),
    }


def _print_summary(metrics: dict[str, Any]) -> None:
    lines = [f"revqom demo: agents {', '.join(metrics['agents'])}; egos {', '.join(metrics['egos'])}"]
    for ego, m in metrics["egos"].items():
        ap = m["ap"]
        lines += [
            f"  ego {ego}: {m['frames']} frames, {m['detections']} detections "
            f"({m['frames_with_detections_message']} frames published, "
            f"{m['frames_fused_with_partners']} fused with partners)",
            f"    AP@0.3 {ap['0.3']:.3f}   AP@0.5 {ap['0.5']:.3f}   AP@0.7 {ap['0.7']:.3f}   "
            f"({m['ground_truth_boxes']} ground-truth boxes, range {m['eval_range_m']})",
            "    latency ms (p50 / p95):",
        ]
        for stage, s in m["latency_ms"].items():
            values = "n/a" if s["p50"] is None else f"{s['p50']:.1f} / {s['p95']:.1f}  (n={s['count']})"
            lines.append(f"      {stage:12s} {values}")
        rejected = {k: v for k, v in m["rejected"].items() if v}
        lines.append(f"    rejected messages: {rejected or 'none'}")
        age = m["partner_age_ms"]
        if age["count"]:
            lines.append(f"    partner maps fused: {age['count']}, age ms p50 {age['p50']:.1f} "
                         f"(min {age['min']:.1f}, max {age['max']:.1f})")
    perturbation = metrics.get("partner_perturbation")
    if perturbation:
        noise = perturbation["pose_noise"]
        lines.append(f"  partners {perturbation['delay_ms']:g} ms late, pose noise {noise[0]:g} m / "
                     f"{noise[1]:g} deg (seed {perturbation['noise_seed']})")
        if perturbation["eval_frames"] is not None:
            ap = perturbation["ap_on_eval_frames"]
            lines.append(f"    on the {perturbation['eval_frames']} frames `revqom eval --delay-ms "
                         f"{perturbation['delay_ms']:g}` keeps: AP@0.3 {ap['0.3']:.3f}   "
                         f"AP@0.5 {ap['0.5']:.3f}   AP@0.7 {ap['0.7']:.3f}")
    lines.append("  bytes per agent per frame (all of a frame's slices):")
    for agent_id, b in metrics["bytes_per_agent"].items():
        entropy = (
            "-"
            if b["entropy"] is None
            else f"{b['entropy']:.0f} B ({b['compression_vs_raw']['entropy']:.0f}x)"
        )
        lines.append(
            f"    {agent_id:16s} packed {b['packed']} B ({b['compression_vs_raw']['packed']:.0f}x)   "
            f"entropy {entropy}   raw float32 {b['raw_float32']} B   "
            f"({b['messages'] / b['frames']:.1f} messages per frame)"
        )
    bpp = metrics["bpp"]
    entropy_bpp = "-" if bpp["entropy"] is None else f"{bpp['entropy']:.2f}"
    lines.append(f"    bits per BEV cell, all agents: packed {bpp['packed']:.2f}   entropy {entropy_bpp}")
    print("\n".join(lines))


def _perturbation_summary(
    args: argparse.Namespace, reader: Any, events: Any, range_m: Any, config: Any
) -> dict[str, Any]:
    """The replay's perturbation of the partners and, with a delay, the first ego's AP on the
    frames ``revqom eval --delay-ms`` keeps (those with a pair that many ms earlier)."""
    from revqom_nodes.data.bag import agent_topics, lidar_frame
    from revqom_nodes.data.perturbation import partner_schedule
    from revqom_nodes.defaults import node_defaults
    from revqom_nodes.scenario.report import ground_truth, summarize_run

    replay = node_defaults("replay")
    delay_ms = replay["replay.partner_delay_ms"] if args.partner_delay_ms is None else args.partner_delay_ms
    summary: dict[str, Any] = {
        "delay_ms": delay_ms,
        "pose_noise": list(args.pose_noise or replay["replay.pose_noise"]),
        "noise_seed": replay["replay.noise_seed"] if args.noise_seed is None else args.noise_seed,
        "eval_frames": None,
        "ap_on_eval_frames": None,
    }
    if delay_ms:
        ego = reader.agents[0][0]
        schedule = partner_schedule([reader.timestamps_us(i) for i in range(len(reader))], delay_ms)
        kept = ground_truth([reader[i] for i, _ in schedule.pairs])
        run = summarize_run(events.for_ego(lidar_frame(ego)), kept, range_m=range_m,
                            channels=config.backbone.bev_channels, ego_cloud_topic=agent_topics(ego)[0],
                            ego_agent_id=ego)
        summary.update(eval_frames=len(kept), ap_on_eval_frames=run["ap"])
    return summary


def _run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from revqom_nodes.data.agents_launch import bag_agents, check_absent, check_egos
    from revqom_nodes.data.errors import DatasetError
    from revqom_nodes.model_file import ModelFileError

    try:
        model = resolve_model_path(args.model)
        config = runtime_model_config(model)
        root, split = scenario_dataset(args, out)
    except (FileNotFoundError, ValueError, ModelFileError) as exc:
        log.error("%s", exc)
        return 1
    from revqom_nodes.data.bag import agent_topics, convert_to_bag, lidar_frame

    bag = out / "bag"
    shutil.rmtree(bag, ignore_errors=True)
    report = convert_to_bag(root, bag, split=split, progress=False)
    log.info("bag: %d frames, %.1f MB -> %s", report.frames_written, report.bytes_written / 1e6, bag)
    agents = bag_agents(bag)
    egos = args.egos or [agents[0][0]]
    try:
        check_egos(agents, egos)
        check_absent(agents, egos, args.absent)
    except DatasetError as exc:
        log.error("--egos, --absent: %s", exc)
        return 1
    perturbed = any(v is not None for v in (args.partner_delay_ms, args.pose_noise, args.noise_seed))
    if perturbed and egos != [agents[0][0]]:
        log.error("--partner-delay-ms, --pose-noise and --noise-seed perturb the partners of the bag's "
                  "first vehicle, %s: run it as the only ego", agents[0][0])
        return 1
    args.rate = args.rate or NODE_RATE / (len(agents) + len(egos))
    events_path = out / "events.jsonl"
    events_path.unlink(missing_ok=True)
    status = _run_scenario(args, bag, model, out, egos)
    if status != 0:
        log.error("the scenario ended with status %d; see %s", status, out / "launch.log")
    if not events_path.is_file():
        log.error("the recorder wrote nothing (%s)", events_path)
        return 1

    from revqom_nodes.data.dairv2x import DairV2XReader
    from revqom_nodes.evaluation.runner import eval_range
    from revqom_nodes.scenario.report import RunEvents, detections_by_stamp, ground_truth, summarize_run

    range_m, note = eval_range(config.grid)
    events = RunEvents.load(events_path)
    reader = DairV2XReader(root, split)
    per_ego: dict[str, Any] = {}
    for ego in egos:
        seen = [reader.ego_frame(i, ego) for i in range(len(reader))]
        ego_events = events.for_ego(lidar_frame(ego))
        per_ego[ego] = summarize_run(
            ego_events, ground_truth(seen), range_m=range_m, channels=config.backbone.bev_channels,
            ego_cloud_topic=agent_topics(ego)[0], ego_agent_id=ego,
        )
        if ego == egos[0]:
            pictures = _pictures(seen, detections_by_stamp(ego_events), list(range_m), out)
    metrics = dict(per_ego[egos[0]])
    if perturbed:
        metrics["partner_perturbation"] = _perturbation_summary(args, reader, events, range_m, config)
    metrics.update(
        {
            "model": model.stem,
            "model_file": str(model),
            "data": str(root),
            "split": split,
            "encoding": args.encoding,
            "rate": args.rate,
            "eval_range_note": note,
            "launch_status": status,
            "pictures": pictures,
            "agents": [agent_id for agent_id, _ in agents],
            "egos": per_ego,
        }
    )
    metrics["seconds"] = round(time.perf_counter() - started, 1)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    _print_summary(metrics)
    print(f"  outputs: {out}/metrics.json, {out}/bev.gif, {out}/bev_montage.png ({metrics['seconds']} s)")
    missing = any(m["missing_frames"] for m in per_ego.values())
    return 0 if status == 0 and not missing else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the whole ROS 2 scenario on a small synthetic (or given) dataset and summarise it",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", help="DAIR-V2X-C root (default: generate a synthetic scenario)")
    parser.add_argument("--split", choices=("train", "val", "all"), default="val", help="split of --data")
    parser.add_argument("--out", default="out/demo", help="output directory")
    parser.add_argument(
        "--frames", type=int, default=DEFAULT_FRAMES, help="synthetic frames to generate (not with --data)"
    )
    parser.add_argument("--seed", type=int, default=DEMO_SEED, help="seed of the synthetic scenario")
    parser.add_argument("--vehicles", type=int, default=1, help="synthetic vehicles, the ego included")
    parser.add_argument("--rsus", type=int, default=1, help="synthetic roadside units")
    parser.add_argument(
        "--egos", type=lambda text: text.split(","), default=None,
        help="comma-separated vehicles that each run a fusion node: vehicle,vehicle_1 (default: vehicle)",
    )
    parser.add_argument(
        "--absent", type=lambda text: text.split(","), default=[],
        help="comma-separated agents that run no agent node, as a unit that is down (the fusion nodes "
        "still expect them): infrastructure",
    )
    parser.add_argument("--model", help=f"model file (default: the bundled {BUNDLED_MODEL})")
    parser.add_argument("--encoding", choices=ENCODINGS, default=DEMO_ENCODING)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help=f"replay speed (default {NODE_RATE} / (agents + egos): 0.25 for 1 + 1); low enough that "
        "every sweep gets encoded and fused",
    )
    parser.add_argument("--threads", type=int, default=1, help="PyTorch CPU threads per node")
    parser.add_argument(
        "--partner-delay-ms", type=parse_delay_ms, default=None, metavar="D",
        help="the replay publishes the partners' clouds and poses D ms of bag time late "
        "(replay.partner_delay_ms); the summary adds the AP on the frames `revqom eval --delay-ms D` keeps",
    )
    parser.add_argument(
        "--pose-noise", type=parse_pose_noise, default=None, metavar="XY_M,YAW_DEG",
        help="Gaussian noise on the partners' published poses, std in metres on x and y, degrees on yaw: "
        "the draw of `revqom eval --pose-noise` (replay.pose_noise)",
    )
    parser.add_argument(
        "--noise-seed", type=int, default=None, help="seed of the pose noise (replay.noise_seed)"
    )
    parser.add_argument(
        "--sync-wait-ms", type=float, default=None, metavar="MS",
        help="how long an ego frame waits for its partners, wall-clock ms (fusion.sync_wait_ms; default: "
        "max(500, 1.5 sweep periods at the replay rate + 1000))",
    )
    parser.set_defaults(run=_run)
