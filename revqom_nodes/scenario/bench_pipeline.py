"""``revqom bench pipeline``: per-stage latency of the runtime pipeline, and its bytes.

One cooperative frame (vehicle + infrastructure) goes through the nodes' own code: the runtime's
``AgentEncoder`` (``--encoding``, the agent node's ``codec.encoding``: "entropy", as the demo, is
CONTEXT with context tables, else ENTROPY; "packed" is PACKED; cut into slices with the agent
node's ``output.slice_bytes`` and ``output.interleave``), the receiver's checks and
assembly of every slice (``validation.check_slice``, ``FrameAssembly``) and ``FusionEngine``.
Each stage is timed (milliseconds, p50 and p95 over ``--repeats`` runs after one warm-up; on
CUDA the engines wait for the device between stages, ``stage_timing``):

| group | stage | what |
|---|---|---|
| agent | ``bev`` | voxelize + sparse backbone -> BEV map, per agent |
| agent | ``quantize`` | bottleneck + residual VQ -> indices, per agent |
| agent | ``pack`` | wire format in ``--encoding``, cut into slices, per agent (what the node sends) |
| agent | ``pack_packed`` | wire format, PACKED, one message, per agent (for comparison; not in ``encode``) |
| agent | ``encode`` | ``bev`` + ``quantize`` + ``pack``, per agent |
| fusion | ``unpack`` | checks, payload decoding and assembly of every slice, all agents |
| fusion | ``decode`` | codebook gather + post-affine decoder, all agents in one call |
| fusion | ``fuse_head`` | warp, fusion, detection head, candidate boxes |
| fusion | ``nms`` | rotated NMS, detections copied to the host |
| fusion | ``merge`` | ``--merge-ego-detections``: the ego's map alone, ego-only head, NMS, merged |
| fusion | ``decode_fuse`` | all of the above (FusionStatus.decode_fuse_ms) |
| | ``end_to_end`` | both agents' ``encode`` one after the other, then ``decode_fuse`` |
| | ``end_to_end_agents_apart`` | the slowest agent's ``encode``, then ``decode_fuse`` (one computer each) |

``bytes``: payload bytes per agent per frame in ``--encoding`` (``sent_per_agent``, ``sent_mean``),
summed over the frame's slices as the node sends them, and the PACKED size for comparison.
``frames_per_second`` is 1000 / p50 end to end (one process doing every stage; deployed, the
agents encode in parallel on their own machines, which ``end_to_end_agents_apart`` composes from
the same repeat's stage times).

``--scale today``: the model file (``--model``, default the bundled one) on ``--points``-point
ray-cast sweeps (or ``--data``'s first frame). ``--scale paper``: the grid and channels of
config/train/dairv2x_k64.yaml (128 x 128 cells of 1.6 m, C = 256) with random weights
(seed 0; the classification bias at 0, so that NMS gets ``pre_nms_top_k`` candidates as on a
busy frame; entropy tables measured on the frame's sweeps) on 100k-point sweeps reaching 100 m.
Its random codebooks pick nearly one code everywhere: its bytes, ``pack`` and ``unpack`` say
nothing of a trained model's.

``--agents 1,2,4,8``: the fusion stages again for each number of agents (the ego plus N - 1
partners, each with its own sweep: the first agents of ``--data``'s first frame when it has
enough, e.g. a set of ``revqom data synth --vehicles 3 --rsus 2``, else ray-cast sweeps placed on
a circle around the ego at half the comm range; ``sweeps`` says which), in ``agents``: p50 and
p95 per stage per count, and ``ms_per_extra_agent``: per stage, the median over the repeats of
the least-squares slope of that repeat's times against the count (``ms_per_extra_agent_iqr``:
the slopes' 25th and 75th percentiles). Each repeat runs every count, in alternating order, so
that the machine's drift over the run (1.5-2x here from minute to minute) moves every count
alike instead of bending the slope. With a model that has an ego-only head, one agent goes
through that head instead of the cooperative one: start the counts at 2 for the cost per partner.
Ray-cast sweeps are busier than a street's (returns in nearly every cell, most cells' codes
outside the context model's alphabet), so their ``unpack`` costs more than real maps'.

``--fusion-process``: the frame's maps (``--scale today``) also go through a ``FusionProcess``, the fusion
node's child process (``runtime/fusion_process.py``): ``fusion_process`` holds p50 and p95 of its
pipe both ways (``transfer``) and of ``decode_fuse`` as the node reports it, the pipe included.

Prints a table, or with ``--json`` one JSON object: ``results`` maps each device (``--device``:
cpu, cuda, or all) to its ``agent``, ``fusion``, ``end_to_end``, ``bytes`` (and ``agents``);
``machine`` says what ran it (``revqom_nodes.bench.machine``).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from revqom_nodes.defaults import node_defaults
from revqom_nodes.scenario.demo import DEMO_ENCODING, ENCODINGS

if TYPE_CHECKING:
    from revqom_nodes.runtime.encoder import AgentEncoder
    from revqom_nodes.runtime.frames import AssembledMap, ReceivedSlice
    from revqom_nodes.runtime.fusion import FusionEngine
    from revqom_nodes.runtime.model import RuntimeModel
    from revqom_nodes.runtime.validation import Expectations

PAPER_CONFIG = "config/train/dairv2x_k64.yaml"
PAPER_POINTS = 100_000
PAPER_RANGE_M = 100.0
AGENT_STAGES = ("bev", "quantize", "pack", "pack_packed", "encode")
FUSION_STAGES = ("unpack", "decode", "fuse_head", "nms", "merge", "decode_fuse")


def _poses(count: int, comm_range_m: float) -> list[np.ndarray]:
    """World poses of the ego and ``count`` - 1 partners; partner 1 is the infrastructure unit of
    the two-agent frame, the others sit on a circle of half the comm range around the ego."""
    from revqom_nodes.geometry import make_transform, rotation_z

    poses = [
        make_transform(rotation_z(0.2), [0.0, 0.0, 0.0]),
        make_transform(rotation_z(-1.0), [25.0, 8.0, 4.0]),
    ]
    radius = comm_range_m / 2
    for a in range(2, count):
        angle = 2 * math.pi * a / count
        position = [radius * math.cos(angle), radius * math.sin(angle), 1.9]
        poses.append(make_transform(rotation_z(angle + 1.0), position))
    return poses[:count]


def _frame(
    args: argparse.Namespace, count: int, comm_range_m: float
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Sweeps (N, 4) and world poses (4, 4) of ``count`` agents: ``--data``'s first frame (its
    agents), or ray-cast stand-ins at ``_poses``."""
    from revqom_nodes.perception.bench import LIDAR_HEIGHTS_M, raycast_cloud

    if args.data:
        from revqom_nodes.data.dairv2x import DairV2XReader

        agents = DairV2XReader(args.data, "all")[0].agents
        return [a.points for a in agents], [a.T_world_from_lidar for a in agents]
    points, reach = (PAPER_POINTS, PAPER_RANGE_M) if args.scale == "paper" else (args.points, 80.0)
    rng = np.random.default_rng(0)
    clouds = [raycast_cloud(rng, points, LIDAR_HEIGHTS_M[min(a, 1)], reach) for a in range(count)]
    return clouds, _poses(count, comm_range_m)


def paper_model(device_name: str, clouds: Sequence[np.ndarray]) -> RuntimeModel:
    """The paper's detector (``PAPER_CONFIG``) with random weights, entropy tables from ``clouds``."""
    import torch

    from revqom_nodes.codec import measure_frequency_tables
    from revqom_nodes.perception.detector import build_detector
    from revqom_nodes.runtime.model import RuntimeModel, resolve_device
    from revqom_nodes.share import SOURCE_PACKAGE, package_share_directory
    from revqom_nodes.training.config import load_config

    config = load_config(package_share_directory(SOURCE_PACKAGE) / PAPER_CONFIG)
    torch.manual_seed(0)
    detector = build_detector(config.model, resolve_device(device_name)).eval()
    torch.nn.init.zeros_(detector.head.classification.bias)
    codec = detector.codec
    with torch.no_grad():
        indices = [codec.encode(detector.bev_features(torch.from_numpy(c))) for c in clouds]
    state = codec.export_state(
        measure_frequency_tables(indices, codec.config.codebook_size, codec.config.num_quantizers)
    )
    return RuntimeModel(detector, state, f"random weights: {PAPER_CONFIG}", config.train.comm_range_m)


def _assemble(messages: Sequence[ReceivedSlice], expect: Expectations) -> AssembledMap:
    """One sweep's slices, checked and assembled as the fusion node does."""
    from revqom_nodes.runtime.validation import FrameAssembly, check_slice

    frame = FrameAssembly(messages[0], expect)
    for message in messages:
        frame.add(check_slice(message, expect))
    return frame.snapshot()


def _summary(times: dict[str, list[float]], stages: Sequence[str]) -> dict[str, dict[str, float]]:
    return {s: {f"p{q}_ms": round(float(np.percentile(times[s], q)), 3) for q in (50, 95)} for s in stages}


def _fusion_once(
    engine: FusionEngine, sent: Sequence[Sequence[ReceivedSlice]], expect: Expectations
) -> dict[str, float]:
    """The fusion side of one frame: every agent's slices -> detections; ms per stage."""
    from revqom_nodes.runtime.latency import now_ms

    start = now_ms(engine.model.device)
    maps = [_assemble(messages, expect) for messages in sent]
    unpack = now_ms(engine.model.device) - start
    fused = engine.fuse(maps[0], maps[1:])
    if len(fused.fused_agent_ids) != len(sent):
        raise RuntimeError(f"{len(sent) - len(fused.fused_agent_ids)} partner(s) left out of the frame")
    return {"unpack": unpack, "decode": fused.decode_ms, "fuse_head": fused.fuse_ms, "nms": fused.nms_ms,
            "merge": fused.merge_ms, "decode_fuse": unpack + fused.engine_ms}


def bench_device(
    model: RuntimeModel, frame: tuple[list[np.ndarray], list[np.ndarray]], args: argparse.Namespace
) -> dict[str, Any]:
    """Every stage's timings and the bytes on the model's device, for ``frame``'s sweeps and poses."""
    import torch

    from revqom_nodes.codec.wire import Encoding
    from revqom_nodes.runtime.encoder import AgentEncoder
    from revqom_nodes.runtime.fusion import FusionEngine
    from revqom_nodes.runtime.latency import now_ms
    from revqom_nodes.runtime.validation import Expectations

    agent = node_defaults("agent")
    encoding = Encoding.ENTROPY if args.encoding == "entropy" else Encoding.PACKED
    encoder = AgentEncoder(
        model, encoding, agent["output.slice_bytes"], agent["output.interleave"], stage_timing=True
    )
    packed = AgentEncoder(model, Encoding.PACKED)
    engine = FusionEngine(model, merge_ego_detections=args.merge_ego_detections, stage_timing=True)
    expect = Expectations.of(model)
    clouds, poses = frame
    device = model.device

    def encode(a: int) -> tuple[list[ReceivedSlice], dict[str, float]]:
        sweep = encoder.encode(clouds[a])
        start = now_ms(device, wait=False)
        packed.pack(sweep.indices)
        pack_packed = now_ms(device, wait=False) - start
        messages = encoder.messages(sweep.slices, agent_id=str(a), T_world_from_lidar=poses[a])
        return messages, {"bev": sweep.bev_ms, "quantize": sweep.quantize_ms, "pack": sweep.pack_ms,
                          "pack_packed": pack_packed, "encode": sweep.encode_ms}

    times: dict[str, list[float]] = {}
    sent_bytes: list[list[int]] = []
    slices: list[list[int]] = []
    with torch.no_grad():
        for repeat in range(args.repeats + 1):  # the first is the warm-up
            start = now_ms(device)
            sent, sample, slowest = [], dict.fromkeys(AGENT_STAGES, 0.0), 0.0
            for a in range(len(clouds)):
                messages, stages = encode(a)
                sent.append(messages)
                slowest = max(slowest, stages["encode"])
                for stage, value in stages.items():
                    sample[stage] += value / len(clouds)  # per agent
            fusion = _fusion_once(engine, sent, expect)
            totals = {"end_to_end": now_ms(device) - start - sample["pack_packed"] * len(clouds),
                      "end_to_end_agents_apart": slowest + fusion["decode_fuse"]}
            if repeat:
                for stage, value in {**sample, **fusion, **totals}.items():
                    times.setdefault(stage, []).append(value)
                sent_bytes.append([sum(m.payload_bytes for m in messages) for messages in sent])
                slices.append([len(messages) for messages in sent])
    settings = model.settings
    height, width = model.grid.bev_shape
    per_agent = np.mean(sent_bytes, axis=0)  # payload bytes of each agent's frame, mean over repeats
    result: dict[str, Any] = {
        "device": str(device),
        "agent": _summary(times, AGENT_STAGES),
        "fusion": _summary(times, FUSION_STAGES),
        **_summary(times, ["end_to_end", "end_to_end_agents_apart"]),
        "frames_per_second": round(1000.0 / float(np.percentile(times["end_to_end"], 50)), 2),
        "bytes": {
            "encoding": args.encoding,
            "sent_per_agent": [round(float(b), 1) for b in per_agent],
            "sent_mean": round(float(per_agent.mean()), 1),
            "bits_per_cell": round(float(per_agent.mean()) * 8 / (height * width), 3),
            "slices_per_agent": [round(float(s), 2) for s in np.mean(slices, axis=0)],
            "slice_bytes": agent["output.slice_bytes"],
            "packed": math.ceil(height * width * settings.num_quantizers
                                * math.ceil(math.log2(settings.codebook_size)) / 8),
        },
        "points_per_agent": [len(c) for c in clouds],
        "bev_shape": [height, width],
        "cell_size_m": model.grid.cell_size_m,
        "codec": settings.to_dict(),
    }
    if args.agents:
        result["agents"] = bench_agents(model, engine, encoder, args)
    if args.fusion_process:
        maps = [_assemble(messages, expect) for messages in sent]
        result["fusion_process"] = bench_fusion_process(model.source, device, maps, args.repeats,
                                                        args.threads, args.merge_ego_detections)
    return result


def bench_fusion_process(
    model_path: str, device: Any, maps: Sequence[AssembledMap], repeats: int, threads: int,
    merge_ego_detections: bool,
) -> dict[str, dict[str, float]]:
    """The frame's maps fused by a ``FusionProcess`` (the fusion node's child process) ``repeats``
    times after a warm-up: p50 / p95 of its pipe both ways (``transfer``) and of ``decode_fuse``
    as the node reports it (the pipe included)."""
    from revqom_nodes.runtime.fusion_process import FusionProcess

    process = FusionProcess(model_path, device=str(device), num_threads=threads,
                            merge_ego_detections=merge_ego_detections)
    times: dict[str, list[float]] = {"transfer": [], "decode_fuse": []}
    try:
        for repeat in range(repeats + 1):
            fused = process.fuse(maps[0], maps[1:])
            if repeat:
                times["transfer"].append(fused.transfer_ms)
                times["decode_fuse"].append(fused.decode_fuse_ms)
    finally:
        process.close()
    return _summary(times, list(times))


def bench_agents(
    model: RuntimeModel, engine: FusionEngine, encoder: AgentEncoder, args: argparse.Namespace
) -> dict[str, Any]:
    """The fusion stages for each number of agents in ``args.agents`` (each agent its own sweep)."""
    import torch

    from revqom_nodes.runtime.validation import Expectations

    expect = Expectations.of(model)
    counts = sorted(set(args.agents))
    clouds, poses = _frame(args, max(counts), engine.comm_range_m) if args.data else ([], [])
    sweeps = "data"
    if len(clouds) < max(counts):  # --data has a fixed number of agents
        ray_cast = argparse.Namespace(**{**vars(args), "data": None})
        clouds, poses = _frame(ray_cast, max(counts), engine.comm_range_m)
        sweeps = "ray-cast"
    with torch.no_grad():
        sent = [
            encoder.messages(encoder.encode(cloud).slices, agent_id=str(a), T_world_from_lidar=T)
            for a, (cloud, T) in enumerate(zip(clouds, poses, strict=True))
        ]
        for count in counts:  # warm-up
            _fusion_once(engine, sent[:count], expect)
        samples: dict[int, list[dict[str, float]]] = {count: [] for count in counts}
        for repeat in range(args.repeats):  # every count once per repeat, in alternating order
            for count in counts if repeat % 2 == 0 else counts[::-1]:
                samples[count].append(_fusion_once(engine, sent[:count], expect))
    stages = {
        str(n): _summary({s: [x[s] for x in samples[n]] for s in FUSION_STAGES}, FUSION_STAGES)
        for n in counts
    }
    result: dict[str, Any] = {"counts": counts, "sweeps": sweeps, "stages": stages,
                              "ms_per_extra_agent": None, "ms_per_extra_agent_iqr": None}
    if len(counts) > 1:
        slopes = {  # per stage, one least-squares slope per repeat
            stage: [np.polyfit(counts, [samples[n][r][stage] for n in counts], 1)[0]
                    for r in range(args.repeats)]
            for stage in FUSION_STAGES
        }
        result["ms_per_extra_agent"] = {s: round(float(np.median(v)), 3) for s, v in slopes.items()}
        result["ms_per_extra_agent_iqr"] = {
            s: [round(float(q), 3) for q in np.percentile(v, [25, 75])] for s, v in slopes.items()
        }
    return result


def _table(result: dict[str, Any]) -> str:
    """The JSON's stages as aligned text lines."""
    lines = [f"{result['scale']} scale, {result['weights']}, {result['threads']} thread(s)"]
    for device, r in result["results"].items():
        sent = r["bytes"]
        lines.append(f"{device}: {r['frames_per_second']} frames/s end to end; "
                     f"{sent['sent_mean']:.0f} B per agent per frame ({sent['encoding']}, sliced)")
        rows = [(group, stage, v) for group in ("agent", "fusion") for stage, v in r[group].items()]
        rows += [("", total, r[total]) for total in ("end_to_end", "end_to_end_agents_apart")]
        lines += [f"  {group:6} {stage:12} p50 {v['p50_ms']:9.3f} ms  p95 {v['p95_ms']:9.3f} ms"
                  for group, stage, v in rows]
        if "agents" in r:
            for count, stages in r["agents"]["stages"].items():
                cells = "  ".join(f"{stage} {v['p50_ms']:.2f}" for stage, v in stages.items())
                lines.append(f"  {count} agent(s), p50 ms: {cells}")
            if r["agents"]["ms_per_extra_agent"]:
                cells = "  ".join(f"{k} {v:.2f}" for k, v in r["agents"]["ms_per_extra_agent"].items())
                lines.append(f"  per extra agent, ms: {cells}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The benchmark's JSON object (see the module docstring)."""
    import torch

    from revqom_nodes.machine import machine
    from revqom_nodes.perception.sample import COMM_RANGE_M
    from revqom_nodes.process import configure_process
    from revqom_nodes.runtime.model import load_runtime_model
    from revqom_nodes.scenario.demo import resolve_model_path

    configure_process(args.threads)
    devices = [args.device]
    if args.device == "all":
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    frame = _frame(args, 2, COMM_RANGE_M)  # two agents: the comm range places none
    results = {}
    for device in devices:
        if args.scale == "paper":
            model = paper_model(device, frame[0])
        else:
            model = load_runtime_model(resolve_model_path(args.model), device)
        results[device] = bench_device(model, frame, args)
    return {
        "benchmark": "pipeline",
        "machine": machine(),
        "scale": args.scale,
        "model": model.source,
        "weights": "random (seed 0)" if args.scale == "paper" else "trained",
        "threads": args.threads,
        "repeats": args.repeats,
        "results": results,
    }


def _run(args: argparse.Namespace) -> int:
    if args.scale == "paper" and (args.model or args.data or args.fusion_process):
        raise SystemExit("--scale paper builds its own model and sweeps: leave out --model, --data and "
                         "--fusion-process")
    result = run(args)
    print(json.dumps(result, indent=2) if args.json else _table(result))
    return 0


def _counts(text: str) -> list[int]:
    counts = [int(v) for v in text.split(",") if v.strip()]
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"agent counts must be positive integers, got {text!r}")
    return counts


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pipeline",
        help="per-stage latency of the runtime pipeline (agents + fusion) and its bytes",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--scale", choices=("today", "paper"), default="today",
                        help=f"today: the model file; paper: {PAPER_CONFIG}, random weights")
    parser.add_argument("--model", help="model file (default: the bundled model; --scale today)")
    parser.add_argument("--data", help="DAIR-V2X-C root whose first frame supplies the sweeps (today)")
    parser.add_argument("--points", type=int, default=50_000, help="points per ray-cast sweep (today)")
    parser.add_argument("--agents", type=_counts, help="fusion stages per number of agents, e.g. 1,2,4,8")
    parser.add_argument("--encoding", choices=ENCODINGS, default=DEMO_ENCODING,
                        help="the agents' payload encoding (the agent node's codec.encoding; default: "
                        "the demo's)")
    parser.add_argument("--merge-ego-detections", action=argparse.BooleanOptionalAction,
                        default=node_defaults("fusion")["fusion.merge_ego_detections"],
                        help="merge the ego-only head's boxes into the cooperative ones (models with an "
                        "ego-only head; default: the fusion node's fusion.merge_ego_detections)")
    parser.add_argument("--fusion-process", action="store_true",
                        help="also time the fusion node's child process on the frame (today)")
    parser.add_argument("--device", default="all", help="cpu, cuda, or all (the CPU, and CUDA when present)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument(
        "--threads", type=int, default=1, help="PyTorch CPU threads (1, as each node in the demo)"
    )
    parser.set_defaults(run=_run)
