"""``revqom bench detector``: time one training step and one inference of the detector, as JSON.

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

LIDAR_HEIGHTS_M = (1.9, 6.0)  # vehicle, infrastructure


def raycast_cloud(rng: np.random.Generator, num_points: int, height_m: float) -> np.ndarray:
    """A (num_points, 4) LiDAR-like sweep: ground to 80 m, walls at 35-70 m, 25 car-sized cylinders."""
    beams = 40
    azimuths = max(num_points // beams, 1)
    elevation = np.deg2rad(np.linspace(-25.0, 15.0, beams))[:, None]
    azimuth = np.linspace(-np.pi, np.pi, azimuths, endpoint=False)[None, :]
    d = np.stack(np.broadcast_arrays(np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth),
                                     np.sin(elevation)), axis=-1).reshape(-1, 3)
    r = np.where(d[:, 2] < -1e-3, height_m / np.maximum(-d[:, 2], 1e-3), np.inf)
    wall = rng.uniform(35.0, 70.0, azimuths)[np.tile(np.arange(azimuths), beams)]
    r = np.minimum(r, wall / np.linalg.norm(d[:, :2], axis=1))
    unit = d[:, :2] / np.linalg.norm(d[:, :2], axis=1, keepdims=True)
    for centre in rng.uniform(-40.0, 40.0, (25, 2)):
        along = unit @ centre
        miss = np.linalg.norm(centre[None] - along[:, None] * unit, axis=1)
        hit_r = (along - np.sqrt(np.maximum(4.0 - miss**2, 0.0))) / np.linalg.norm(d[:, :2], axis=1)
        z = hit_r * d[:, 2]
        hit = (miss < 2.0) & (along > 0) & (z > -height_m) & (z < -height_m + 1.6)
        r = np.where(hit, np.minimum(r, hit_r), r)
    keep = r < 80.0
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
    import torch
    import yaml

    from revqom_nodes.perception.config import DetectorConfig
    from revqom_nodes.perception.detector import build_detector, make_frame_input
    from revqom_nodes.perception.voxelize import voxelize_batch

    torch.set_num_threads(args.threads)
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
    }


def _run(args: argparse.Namespace) -> int:
    print(json.dumps(run(args), indent=2))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("detector", help="time a detector training step and inference")
    parser.add_argument("--config", help="detector YAML for DetectorConfig.from_dict (default: the defaults)")
    parser.add_argument("--data", help="DAIR-V2X-C root whose first train frame supplies the clouds")
    parser.add_argument("--points", type=int, default=50_000, help="points per agent without --data")
    parser.add_argument("--agents", type=int, default=2, help="agents without --data")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.set_defaults(run=_run)
