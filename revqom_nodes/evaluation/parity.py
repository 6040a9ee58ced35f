"""``revqom bench parity``: one model file on the CPU and on CUDA over the same frames, as JSON.

For each frame both devices compute every agent's BEV map, the codebook indices (codec
models) and the detections through the evaluation path (``evaluate_model``: the wire and
``CodecDecoder`` included). Reported: the largest BEV difference (absolute and relative to
the map's largest value), the share of indices that agree, the decoded maps of the CPU's
indices rebuilt on both devices, the AP of each device on these frames and, for the boxes
scored at least ``--min-score``, their counts and the matched boxes' largest centre and
score differences; then the median wall-clock time of one
detection (``detect``) and of one training step (forward, loss, backward, AdamW) of a batch
of ``--batch`` frames on each device, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def _median_s(fn: Callable[[], Any], repeats: int, synchronize: Callable[[], None]) -> float:
    fn()
    synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize()
        times.append(time.perf_counter() - start)
    return round(statistics.median(times), 5)


def _box_differences(cpu_frames: Sequence[dict], gpu_frames: Sequence[dict], min_score: float
                     ) -> dict[str, float | int]:
    """Boxes scored >= ``min_score`` on either device, matched greedily by nearest centre (CPU boxes
    in descending score order); low-score boxes near the threshold and the top-k cut are left out
    because a score change of 1e-4 moves them in or out of the list."""
    centre, score, cpu_boxes, gpu_boxes = 0.0, 0.0, 0, 0
    for a, b in zip(cpu_frames, gpu_frames, strict=True):
        pa, pb = np.asarray(a["pred"]).reshape(-1, 8), np.asarray(b["pred"]).reshape(-1, 8)
        pa, pb = pa[pa[:, 7] >= min_score], pb[pb[:, 7] >= min_score]
        cpu_boxes, gpu_boxes = cpu_boxes + len(pa), gpu_boxes + len(pb)
        free = np.ones(len(pb), dtype=bool)
        for box in pa[np.argsort(-pa[:, 7])]:
            if not free.any():
                break
            distance = np.where(free, np.linalg.norm(pb[:, :2] - box[:2], axis=1), np.inf)
            j = int(np.argmin(distance))
            free[j] = False
            centre = max(centre, float(distance[j]))
            score = max(score, float(abs(pb[j, 7] - box[7])))
    return {"min_score": min_score, "boxes_cpu": cpu_boxes, "boxes_cuda": gpu_boxes,
            "max_centre_difference_m": centre, "max_score_difference": score}


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from revqom_nodes.codec import CodecDecoder
    from revqom_nodes.data.dairv2x import DairV2XReader
    from revqom_nodes.evaluation.runner import evaluate_model
    from revqom_nodes.model_file import load_model
    from revqom_nodes.perception.detector import build_detector
    from revqom_nodes.perception.sample import batch_inputs, crop_to_grid, frame_to_sample

    if not torch.cuda.is_available():
        raise SystemExit("revqom bench parity needs a CUDA device (torch.cuda.is_available() is False)")
    torch.set_num_threads(args.threads)
    reader = DairV2XReader(args.data, args.split)
    frames = [reader[i] for i in range(min(args.frames, len(reader)))]
    loaded = {name: load_model(args.model, name) for name in ("cpu", "cuda")}
    config = loaded["cpu"].config
    train = loaded["cpu"].resolved_config.get("train", {})
    common = {"max_agents": int(train.get("max_agents", 2)),
              "comm_range_m": float(train.get("comm_range_m", 100.0))}
    samples = [frame_to_sample(f, config.grid, **common) for f in frames]
    clouds = [[torch.from_numpy(crop_to_grid(p, config.grid)) for p in s.points] for s in samples]

    bev_abs, bev_rel, agree, total, decoded = 0.0, 0.0, 0, 0, 0.0
    with torch.no_grad():
        for points in clouds:
            maps = {name: m.detector.bev_features_batch(points).cpu() for name, m in loaded.items()}
            bev_abs = max(bev_abs, float((maps["cpu"] - maps["cuda"]).abs().max()))
            bev_rel = max(bev_rel, bev_abs / max(float(maps["cpu"].abs().max()), 1e-12))
            if config.codec is not None:
                indices = {name: m.detector.codec.encode(maps[name].to(m.detector.device)).cpu()
                           for name, m in loaded.items()}
                agree += int((indices["cpu"] == indices["cuda"]).sum())
                total += indices["cpu"].numel()
                rebuilt = [CodecDecoder(m.codec_state).to(m.detector.device).decode(indices["cpu"]).bev.cpu()
                           for m in loaded.values()]
                decoded = max(decoded, float((rebuilt[0] - rebuilt[1]).abs().max()))
    results = {name: evaluate_model(m, frames, name=name, progress=False) for name, m in loaded.items()}

    def synchronize() -> None:
        torch.cuda.synchronize()

    timing: dict[str, dict[str, float]] = {}
    inputs, targets = batch_inputs(samples[: args.batch])
    poses = samples[0].T_ego_from_agent
    for name, m in loaded.items():
        repeats = args.repeats if name == "cuda" else max(args.repeats // 5, 2)
        detect_s = _median_s(lambda m=m: m.detector.detect(clouds[0], poses), repeats, synchronize)
        torch.manual_seed(0)
        student = build_detector(config, name)
        student.load_state_dict(m.detector.state_dict())
        student.train()
        optimizer = torch.optim.AdamW(student.parameters(), lr=1e-4)

        def step(student: Any = student, optimizer: Any = optimizer) -> None:
            optimizer.zero_grad(set_to_none=True)
            student.loss(student(inputs), targets).total.backward()
            optimizer.step()

        timing[name] = {"detect_s": detect_s, "train_step_s": _median_s(step, repeats, synchronize)}
    return {
        "model": args.model,
        "model_id": loaded["cpu"].model_id,
        "frames": len(frames),
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "threads": args.threads,
        "bev_max_abs_difference": bev_abs,
        "bev_max_relative_difference": bev_rel,
        "indices_equal_fraction": agree / total if total else None,
        "decoded_max_abs_difference": decoded if total else None,
        "ap": {name: r["ap"] for name, r in results.items()},
        "matched_boxes": _box_differences(results["cpu"]["per_frame"], results["cuda"]["per_frame"],
                                          args.min_score),
        "train_batch_frames": len(inputs),
        "timing": timing,
        "speedup": {key: timing["cpu"][key] / timing["cuda"][key] for key in ("detect_s", "train_step_s")},
    }


def _run(args: argparse.Namespace) -> int:
    print(json.dumps(run(args), indent=2))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("parity", help="CPU vs CUDA: same model, same frames (needs a GPU)")
    parser.add_argument("--model", required=True, help="model file (models/NAME.pt)")
    parser.add_argument("--data", required=True, help="DAIR-V2X-C root")
    parser.add_argument("--split", default="all", choices=("train", "val", "all"))
    parser.add_argument("--frames", type=int, default=8, help="first N frames of the split")
    parser.add_argument("--batch", type=int, default=4, help="frames per timed training step")
    parser.add_argument("--repeats", type=int, default=20, help="timed repeats on CUDA (CPU: a fifth)")
    parser.add_argument("--threads", type=int, default=4, help="torch CPU threads")
    parser.add_argument("--min-score", type=float, default=0.3, help="boxes compared between the devices")
    parser.set_defaults(run=_run)
