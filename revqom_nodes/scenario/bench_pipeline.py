"""``revqom bench pipeline``: per-stage latency of the runtime pipeline, as JSON.

One cooperative frame (vehicle + infrastructure) goes through the nodes' own code (the
runtime's ``AgentEncoder``, ``validation.check_frame`` and ``FusionEngine``), each stage timed
(milliseconds, median and p95 over ``--repeats`` runs after one warm-up):

| stage | where |
|---|---|
| ``bev`` | agent: voxelize + sparse backbone -> BEV map, per agent |
| ``quantize`` | agent: bottleneck + residual VQ -> indices, per agent |
| ``pack`` / ``pack_entropy`` | agent: wire format, PACKED / ENTROPY, per agent |
| ``unpack`` | fusion: validation + payload decoding of the ENTROPY message, per agent |
| ``decode`` | fusion: codebook gather + post-affine decoder (``CodecDecoder``), map by map, all agents |
| ``fuse_head_nms`` | fusion: warp, fusion, head, NMS (``detect_from_bev``) |
| ``end_to_end`` | both agents' encoding one after the other, then the fusion side |

``frames_per_second`` is 1000 / median end to end (one process doing every stage; in the
deployed system the agents encode in parallel on their own machines). Runs on the CPU and,
when present, on CUDA (``--device``). Clouds come from ``--data`` (its first frame) or the
perception benchmark's ray-cast stand-in.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np


def _frame(args: argparse.Namespace) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Clouds (vehicle, infrastructure) and world poses of one frame."""
    from revqom_nodes.geometry import make_transform, rotation_z

    if args.data:
        from revqom_nodes.data.dairv2x import DairV2XReader

        frame = DairV2XReader(args.data, "all")[0]
        return [a.points for a in frame.agents], [a.T_world_from_lidar for a in frame.agents]
    from revqom_nodes.perception.bench import LIDAR_HEIGHTS_M, raycast_cloud

    rng = np.random.default_rng(0)
    clouds = [raycast_cloud(rng, args.points, height) for height in LIDAR_HEIGHTS_M]
    return clouds, [
        make_transform(rotation_z(0.2), [0.0, 0.0, 0.0]),
        make_transform(rotation_z(-1.0), [25.0, 8.0, 4.0]),
    ]


def bench_device(model_path: Path, device_name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Every stage's timings on one device."""
    import torch

    from revqom_nodes.codec.wire import Encoding
    from revqom_nodes.runtime.encoder import AgentEncoder
    from revqom_nodes.runtime.fusion import FusionEngine
    from revqom_nodes.runtime.latency import now_ms, summarize_ms
    from revqom_nodes.runtime.model import load_runtime_model
    from revqom_nodes.runtime.validation import Expectations, check_frame

    model = load_runtime_model(model_path, device_name)
    settings, device = model.settings, model.device
    encoder, packed = AgentEncoder(model, Encoding.ENTROPY), AgentEncoder(model, Encoding.PACKED)
    engine = FusionEngine(model)
    clouds, poses = _frame(args)
    height, width = model.grid.bev_shape
    expect = Expectations.of(model)
    times: dict[str, list[float]] = {}

    def record(stage: str, value: float) -> None:
        times.setdefault(stage, []).append(value)

    def run_once() -> dict[str, float]:
        maps, sample = [], {}
        start = now_ms(device)
        for agent, (cloud, T) in enumerate(zip(clouds, poses, strict=True)):
            sweep = encoder.encode(cloud)
            t0 = now_ms(device)
            packed.pack(sweep.indices)
            t1 = now_ms(device)
            (message,) = encoder.messages(sweep.slices, agent_id=str(agent), T_world_from_lidar=T)
            maps.append(check_frame(message, expect))
            t2 = now_ms(device)
            for stage, value in (
                ("bev", sweep.bev_ms),
                ("quantize", sweep.quantize_ms),
                ("pack", t1 - t0),
                ("pack_entropy", sweep.pack_ms),
                ("unpack", t2 - t1),
            ):
                sample[stage] = sample.get(stage, 0.0) + value / len(clouds)  # per agent
        fused = engine.fuse(maps[0], maps[1:])
        end = now_ms(device)
        sample.update(decode=fused.decode_ms, fuse_head_nms=fused.fuse_ms, end_to_end=end - start)
        return sample

    with torch.no_grad():
        run_once()
        for _ in range(args.repeats):
            for stage, value in run_once().items():
                record(stage, value)
    stages = {stage: {k: summarize_ms(values)[k] for k in ("p50", "p95")} for stage, values in times.items()}
    return {
        "device": str(device),
        "stages_ms": stages,
        "frames_per_second": round(1000.0 / stages["end_to_end"]["p50"], 2),
        "points_per_agent": [len(c) for c in clouds],
        "bev_shape": [height, width],
        "codec": settings.to_dict(),
    }


def _run(args: argparse.Namespace) -> int:
    import torch

    from revqom_nodes.scenario.demo import resolve_model_path

    torch.set_num_threads(args.threads)
    model_path = resolve_model_path(args.model)
    devices = (
        [args.device] if args.device != "all" else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    )
    result = {
        "model": str(model_path),
        "threads": args.threads,
        "repeats": args.repeats,
        "results": [bench_device(model_path, device, args) for device in devices],
    }
    print(json.dumps(result, indent=2))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pipeline",
        help="per-stage latency of the runtime pipeline (agents + fusion)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", help="model file (default: the bundled model)")
    parser.add_argument("--data", help="DAIR-V2X-C root whose first frame supplies the clouds")
    parser.add_argument("--points", type=int, default=50_000, help="points per agent without --data")
    parser.add_argument("--device", default="all", help="cpu, cuda, or all (the CPU, and CUDA when present)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument(
        "--threads", type=int, default=1, help="PyTorch CPU threads (1, as each node in the demo)"
    )
    parser.set_defaults(run=_run)
