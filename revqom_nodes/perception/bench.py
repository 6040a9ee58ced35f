"""``revqom bench detector`` and ``revqom bench nms``: perception timings, as JSON.

``nms`` times rotated NMS, the numpy reference loop against the torch one, in the same run
(interleaved), on clustered candidate sets like a detection head's (``--sizes``), and
checks that both keep the same boxes.

``detector``: time one training step and one inference of the detector, and the height
compression of its sparse backbone's output: spconv's ``.dense()`` against the direct scatter.

Input clouds come from a DAIR-V2X-C root (``--data``: its first frames, vehicle and
infrastructure) or, without one, from a ray-cast stand-in (ground, walls, car-sized
cylinders) of ``--points`` points per agent. A training step is forward + loss +
backward + Adam step on one cooperative frame; inference is ``detect`` in eval mode.
Times are medians over ``--repeats`` runs after one warm-up, wall clock and process
CPU time (the sum over threads; steadier than wall clock on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from revqom_nodes.process import configure_process

LIDAR_HEIGHTS_M = (1.9, 6.0)  # vehicle, infrastructure


def raycast_cloud(
    rng: np.random.Generator, num_points: int, height_m: float, max_range_m: float = 80.0
) -> np.ndarray:
    """A (num_points, 4) LiDAR-like sweep: ground to ``max_range_m``, walls at 35 m to
    ``max_range_m`` - 10 m, 25 car-sized cylinders."""
    beams = 40
    azimuths = max(num_points // beams, 1)
    elevation = np.deg2rad(np.linspace(-25.0, 15.0, beams))[:, None]
    azimuth = np.linspace(-np.pi, np.pi, azimuths, endpoint=False)[None, :]
    d = np.stack(np.broadcast_arrays(np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth),
                                     np.sin(elevation)), axis=-1).reshape(-1, 3)
    r = np.where(d[:, 2] < -1e-3, height_m / np.maximum(-d[:, 2], 1e-3), np.inf)
    wall = rng.uniform(35.0, max_range_m - 10.0, azimuths)[np.tile(np.arange(azimuths), beams)]
    r = np.minimum(r, wall / np.linalg.norm(d[:, :2], axis=1))
    unit = d[:, :2] / np.linalg.norm(d[:, :2], axis=1, keepdims=True)
    for centre in rng.uniform(-40.0, 40.0, (25, 2)):
        along = unit @ centre
        miss = np.linalg.norm(centre[None] - along[:, None] * unit, axis=1)
        hit_r = (along - np.sqrt(np.maximum(4.0 - miss**2, 0.0))) / np.linalg.norm(d[:, :2], axis=1)
        z = hit_r * d[:, 2]
        hit = (miss < 2.0) & (along > 0) & (z > -height_m) & (z < -height_m + 1.6)
        r = np.where(hit, np.minimum(r, hit_r), r)
    keep = r < max_range_m
    xyz = d[keep] * r[keep, None] + rng.normal(0.0, 0.02, (int(keep.sum()), 3))
    return np.column_stack([xyz, rng.uniform(0.0, 255.0, len(xyz))]).astype(np.float32)


def _median_s(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """Median wall-clock and process CPU seconds of ``fn`` (CPU time: robust on a shared machine)."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return round(statistics.median(wall), 4), round(statistics.median(cpu), 4)


def _frame(args: argparse.Namespace) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """Clouds, T_ego_from_agent and ego-frame ground truth of one frame."""
    if args.data is not None:
        from revqom_nodes.data.dairv2x import DairV2XReader
        from revqom_nodes.geometry import invert

        frame = DairV2XReader(args.data, "train")[0]
        T_ego_from_world = invert(frame.ego.T_world_from_lidar)
        poses = [T_ego_from_world @ agent.T_world_from_lidar for agent in frame.agents]
        return [agent.points for agent in frame.agents], poses, frame.boxes_in(frame.ego.T_world_from_lidar)
    rng = np.random.default_rng(0)
    clouds = [raycast_cloud(rng, args.points, LIDAR_HEIGHTS_M[min(a, 1)]) for a in range(args.agents)]
    poses = [np.eye(4) for _ in range(args.agents)]
    for a, T in enumerate(poses[1:], start=1):
        T[:2, 3] = [20.0 * a, 10.0]
    boxes = np.column_stack(
        [rng.uniform(-40, 40, (20, 2)), np.full(20, -1.0), np.tile([4.5, 2.0, 1.6], (20, 1)),
         rng.uniform(-np.pi, np.pi, 20)]
    )
    return clouds, poses, boxes


def run(args: argparse.Namespace) -> dict[str, Any]:
    import spconv.pytorch as spconv
    import torch
    import yaml

    from revqom_nodes.perception.backbone import height_compression
    from revqom_nodes.perception.config import DetectorConfig
    from revqom_nodes.perception.detector import build_detector, make_frame_input
    from revqom_nodes.perception.voxelize import voxelize_batch

    configure_process(args.threads)
    torch.manual_seed(0)
    values = yaml.safe_load(Path(args.config).read_text()) if args.config else {}
    config = DetectorConfig.from_dict(values or {})
    model = build_detector(config, args.device)
    clouds, poses, boxes = _frame(args)
    frame = make_frame_input(clouds, poses)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def train_step() -> None:
        optimizer.zero_grad()
        losses = model.loss(model([frame]), [boxes])
        losses.total.backward()
        optimizer.step()

    model.train()
    train_s = _median_s(train_step, args.repeats)
    model.eval()
    detect_s = _median_s(lambda: model.detect(clouds, poses), args.repeats)
    voxels = voxelize_batch([p.to(model.device) for p in frame.points], config.grid)
    backbone = model.backbone
    with torch.no_grad():
        sparse = backbone.sparse(
            spconv.SparseConvTensor(voxels.features, voxels.coords, backbone.spatial_shape, voxels.batch_size)
        )
        dense_s = _median_s(lambda: sparse.dense().flatten(1, 2), args.repeats)
        scatter_s = _median_s(lambda: height_compression(sparse), args.repeats)
    return {
        "config": config.to_dict(),
        "device": str(model.device),
        "threads": args.threads,
        "points_per_agent": [len(c) for c in clouds],
        "voxels": int(voxels.features.shape[0]),
        "bev_shape": list(config.grid.bev_shape),
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_step_s": train_s[0],
        "train_step_cpu_s": train_s[1],
        "detect_s": detect_s[0],
        "detect_cpu_s": detect_s[1],
        "height_compression_s": {"spconv_dense": dense_s[0], "scatter": scatter_s[0]},
    }


def _run_nms(args: argparse.Namespace) -> int:
    print(json.dumps(run_nms(args), indent=2))
    return 0


def _run(args: argparse.Namespace) -> int:
    print(json.dumps(run(args), indent=2))
    return 0


def nms_candidates(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` (M, 7) boxes and (M,) scores as a head proposes them: 8 jittered boxes per car
    over 160 m x 80 m, a quarter of them turned by pi / 2."""
    per_object = 8
    centre = np.repeat(rng.uniform([-80, -40], [80, 40], (count // per_object + 1, 2)), per_object, axis=0)
    centre = centre[:count]
    boxes = np.column_stack([
        centre + rng.normal(0, 0.8, (count, 2)), rng.normal(-1, 0.1, count),
        rng.uniform(3.8, 5.0, count), rng.uniform(1.7, 2.2, count), rng.uniform(1.4, 1.8, count),
        rng.normal(0, 0.1, count) + (rng.uniform(size=count) < 0.25) * np.pi / 2,
    ])
    return boxes, rng.uniform(0.2, 1.0, count)


def _percentiles_ms(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1e3
    return {f"p{q}_ms": round(float(np.percentile(ms, q)), 3) for q in (50, 95)}


def run_nms(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from revqom_nodes.machine import machine
    from revqom_nodes.perception.nms import rotated_nms, rotated_nms_numpy

    configure_process(args.threads)
    rng = np.random.default_rng(0)
    kwargs = {"iou_threshold": args.iou_threshold, "max_detections": args.max_detections}
    sizes: dict[str, Any] = {}
    for count in args.sizes:
        boxes, scores = nms_candidates(rng, count)
        on_device = torch.from_numpy(boxes).to(args.device), torch.from_numpy(scores).to(args.device)
        runs = {
            "numpy": lambda b=boxes, s=scores: rotated_nms_numpy(b, s, **kwargs),
            "torch": lambda b=on_device: rotated_nms(*b, **kwargs).cpu().numpy(),
        }
        kept = {name: fn() for name, fn in runs.items()}  # also the warm-up
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, fn in runs.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        sizes[str(count)] = {
            **{name: _percentiles_ms(t) for name, t in times.items()},
            "kept": len(kept["torch"]),
            "same_kept": bool(np.array_equal(kept["numpy"], kept["torch"])),
        }
    return {"machine": machine(), "threads": args.threads, "device": args.device, "repeats": args.repeats,
            **kwargs, "candidates": sizes}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("nms", help="time rotated NMS, numpy reference against torch")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512, 1024],
                        help="candidates per set")
    parser.add_argument("--iou-threshold", type=float, default=0.15)
    parser.add_argument("--max-detections", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.set_defaults(run=_run_nms)

    parser = subparsers.add_parser("detector", help="time a detector training step and inference")
    parser.add_argument("--config", help="detector YAML for DetectorConfig.from_dict (default: the defaults)")
    parser.add_argument("--data", help="DAIR-V2X-C root whose first train frame supplies the clouds")
    parser.add_argument("--points", type=int, default=50_000, help="points per agent without --data")
    parser.add_argument("--agents", type=int, default=2, help="agents without --data")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.set_defaults(run=_run)
