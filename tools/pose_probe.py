"""Can the receiver see a partner's pose error in what it receives? Four probes, one JSON object.

Issue 14 asks the fusion to estimate each partner's relative pose error before fusing. This
measures whether the decoded maps hold the signal any estimator would need, on the first
``--frames`` frames of a DAIR-V2X-C root (ego and its first partner, the partner's transmitted
pose off by the ``revqom eval --pose-noise`` draw, seed 0, the ego's frame standing for the
world). Each probe scores candidate corrections of the partner's pose and takes the best;
``rms_m`` compares that choice with the true correction (``rms_before_m``: no correction). A
probe that sees the error lands near zero residual; one that sees nothing drifts with coverage
to its window's edge.

- ``features``: mean cosine between the ego's and the warped partner's decoded features (each
  map's mean feature removed) over the cells both cover; shifts of +-1.2 m, 0.2 m apart.
- ``occupancy``: intersection over union of the two maps' occupied cells
  (``selection.EmptyCells``) over the cells both cover; shifts of +-3.2 m, 0.8 m apart.
- ``confidence``: the cooperative head's sum of squared anchor scores after fusing the partner
  shifted by the candidate; shifts of +-0.45 m, 0.15 m apart.
- ``boxes``: detections of each map alone (the ego-only head when the file has one), those
  scoring >= 0.3; ``matched_per_frame``: partner boxes (at the true pose) within 2 m of an ego box,
  the correspondences a box-based alignment (CoAlign's agent-object graph) would start from.

    .venv/bin/python tools/pose_probe.py --model models/synthetic_gpu_k64_ctx.pt \\
        --data /work/data/synth_val --frames 20 --pose-noise 0.2,0.2
"""

from __future__ import annotations

import argparse
import json
from types import SimpleNamespace

import numpy as np
import torch

from revqom_nodes.data.dairv2x import DairV2XReader
from revqom_nodes.data.perturbation import noisy_pose, pose_errors
from revqom_nodes.perception.postprocess import suppress
from revqom_nodes.perception.sample import crop_to_grid, frame_to_sample
from revqom_nodes.perception.warp import warp_to_ego
from revqom_nodes.runtime.fusion import FusionEngine
from revqom_nodes.runtime.model import load_runtime_model
from revqom_nodes.runtime.selection import EmptyCells

WINDOWS = {"features": (0.2, 6), "occupancy": (0.8, 4), "confidence": (0.15, 3)}  # step m, steps each way
MIN_SCORE, MATCH_M = 0.3, 2.0


def _shifted(T: np.ndarray, dx: float, dy: float) -> np.ndarray:
    S = np.eye(4)
    S[:2, 3] = dx, dy
    return S @ T


def _search(score, step: float, steps: int) -> np.ndarray:
    """The (dx, dy) of the best score over the square window."""
    offsets = np.arange(-steps, steps + 1) * step
    scores = np.array([[score(dx, dy) for dy in offsets] for dx in offsets])
    a, b = np.unravel_index(np.argmax(scores), scores.shape)
    return np.array([offsets[a], offsets[b]])


class _Received:
    """One frame's decoded maps (2, C, H, W), occupied cells (2, H, W) and the partner's sent pose:
    each probe's score of a correction (dx, dy) metres of the partner's pose in the ego frame."""

    def __init__(self, bev: torch.Tensor, occupied: torch.Tensor, T_sent: np.ndarray, model) -> None:
        self.bev, self.occupied, self.T_sent = bev, occupied, T_sent
        self.centred = bev - bev.mean(dim=(2, 3), keepdim=True)
        self.detector, self.grid = model.detector, model.grid

    def features(self, dx: float, dy: float) -> float:
        w = warp_to_ego(self.centred[1:], _shifted(self.T_sent, dx, dy)[None], self.grid)
        cos = torch.nn.functional.cosine_similarity(self.centred[0], w.features[0], dim=0)
        return float(cos[w.valid[0]].mean())

    def occupancy(self, dx: float, dy: float) -> float:
        w = warp_to_ego(self.occupied[1:, None], _shifted(self.T_sent, dx, dy)[None], self.grid)
        both, p, e = w.valid[0], w.features[0, 0], self.occupied[0]
        return float((p * e)[both].sum() / torch.maximum(p, e)[both].sum().clamp(min=1e-6))

    def confidence(self, dx: float, dy: float) -> float:
        poses = torch.from_numpy(np.stack([np.eye(4), _shifted(self.T_sent, dx, dy)]))
        fused = self.detector._fuse(self.bev, poses, None)
        return float((self.detector.head(fused).class_logits.sigmoid() ** 2).sum())


def probe(model_path: str, data: str, frames: int, xy_m: float, yaw_deg: float) -> dict:
    torch.set_num_threads(1)
    model = load_runtime_model(model_path, "cpu")
    engine, detector, grid = FusionEngine(model), model.detector, model.grid
    empty = EmptyCells.of(model)
    reader = DairV2XReader(data, "all")
    truth, chosen, matched = [], {k: [] for k in WINDOWS}, []
    for index in range(min(frames, len(reader))):
        frame = reader.ego_frame(index, reader.agents[0][0])
        sample = frame_to_sample(frame, grid, max_agents=2, comm_range_m=model.comm_range_m)
        if len(sample.points) < 2:
            continue
        T_true = sample.T_ego_from_agent[1]
        T_sent = noisy_pose(T_true, *pose_errors(0, index, 1, xy_m, yaw_deg)[0])
        with torch.no_grad():
            indices = torch.cat([detector.encode_agent(torch.from_numpy(crop_to_grid(p, grid)))
                                 for p in sample.points])
            bev, _ = engine.receiver.decode_agents(indices.to(torch.uint8), [None, None])
        truth.append((T_true @ np.linalg.inv(T_sent))[:2, 3])
        occupied = torch.from_numpy(empty.occupied(
            [SimpleNamespace(indices=i, valid=None) for i in indices.numpy()])).float()
        received = _Received(bev, occupied, T_sent, model)
        with torch.no_grad():
            for name in WINDOWS:
                chosen[name].append(_search(getattr(received, name), *WINDOWS[name]))
            boxes = []
            for a in range(2):
                alone = detector.candidates_from_bev(bev[a:a + 1], np.eye(4)[None])
                found = suppress(alone, detector.config.head)
                boxes.append(found.boxes[found.scores >= MIN_SCORE, :2])
        partner = boxes[1] @ T_true[:2, :2].T + T_true[:2, 3]
        matched.append(sum(bool(len(boxes[0])) and float(np.hypot(*(boxes[0] - p).T).min()) < MATCH_M
                           for p in partner))
    truth_xy = np.array(truth)
    rms = lambda v: [round(float(x), 3) for x in np.sqrt((v ** 2).mean(axis=0))]  # noqa: E731
    return {
        "model": model_path, "data": data, "frames": len(truth), "pose_noise": [xy_m, yaw_deg],
        "rms_before_m": rms(truth_xy),
        "probes": {name: {"step_m": step, "reach_m": round(step * steps, 3),
                          "rms_m": rms(truth_xy - np.array(chosen[name])),
                          "at_window_edge": float(np.mean(np.abs(np.array(chosen[name])).max(axis=1)
                                                          >= step * steps - 1e-9))}
                   for name, (step, steps) in WINDOWS.items()},
        "boxes": {"min_score": MIN_SCORE, "match_m": MATCH_M, "matched_per_frame": float(np.mean(matched)),
                  "frames_with_two_or_more": float(np.mean(np.array(matched) >= 2))},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--pose-noise", default="0.2,0.2", help="XY_M,YAW_DEG as revqom eval takes it")
    args = parser.parse_args()
    xy_m, yaw_deg = (float(v) for v in args.pose_noise.split(","))
    print(json.dumps(probe(args.model, args.data, args.frames, xy_m, yaw_deg), indent=2))


if __name__ == "__main__":
    main()
