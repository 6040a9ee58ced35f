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

``--learned-steps N`` runs a fifth probe instead (``learned``): a small CNN that sees the ego's
decoded map, the partner's warped at its sent pose and that map's coverage, trained for N steps
(batch 8, a fresh pose error per sample) to regress the correction (dx, dy, dyaw) on the frames
before ``--train-frames``, tested on the frames from there on (four draws each); ``rms_after``
against ``rms_before`` on the test frames says how much of the error such an aligner recovers.

    .venv/bin/python tools/pose_probe.py --model models/synthetic_gpu_k64_ctx.pt \\
        --data /work/data/synth_val --frames 20 --pose-noise 0.2,0.2
    .venv/bin/python tools/pose_probe.py --model models/synthetic_k64_ctx_partner_dropout.pt \\
        --data /work/data/synth_val --frames 250 --pose-noise 0.2,0.2 --learned-steps 5000
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


def _decoded_pairs(model, data: str, frames: int):
    """Per frame of the first ``frames`` with a partner: (frame index, the ego's and the partner's
    indices (2, Q, H, W) and decoded maps (2, C, H, W), the partner's true T_ego_from_agent)."""
    engine, detector, grid = FusionEngine(model), model.detector, model.grid
    reader = DairV2XReader(data, "all")
    for index in range(min(frames, len(reader))):
        frame = reader.ego_frame(index, reader.agents[0][0])
        sample = frame_to_sample(frame, grid, max_agents=2, comm_range_m=model.comm_range_m)
        if len(sample.points) < 2:
            continue
        with torch.no_grad():
            indices = torch.cat([detector.encode_agent(torch.from_numpy(crop_to_grid(p, grid)))
                                 for p in sample.points])
            bev, _ = engine.receiver.decode_agents(indices.to(torch.uint8), [None, None])
        yield index, indices, bev, sample.T_ego_from_agent[1]


def probe(model_path: str, data: str, frames: int, xy_m: float, yaw_deg: float) -> dict:
    torch.set_num_threads(1)
    model = load_runtime_model(model_path, "cpu")
    detector = model.detector
    empty = EmptyCells.of(model)
    truth, chosen, matched = [], {k: [] for k in WINDOWS}, []
    for index, indices, bev, T_true in _decoded_pairs(model, data, frames):
        T_sent = noisy_pose(T_true, *pose_errors(0, index, 1, xy_m, yaw_deg)[0])
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


class _Aligner(torch.nn.Module):
    """(B, 2 C + 1, H, W): the ego's map, the partner's warped at its sent pose, that map's
    coverage -> (B, 3) correction (dx, dy, dyaw) in units of the noise's std; four 3x3 convolutions
    (one of stride 2), averaged over the covered cells."""

    def __init__(self, channels: int, width: int = 64) -> None:
        super().__init__()
        conv = torch.nn.Conv2d
        self.features = torch.nn.Sequential(
            conv(2 * channels + 1, width, 3, padding=1), torch.nn.ReLU(), conv(width, width, 3, padding=1),
            torch.nn.ReLU(), conv(width, width, 3, stride=2, padding=1), torch.nn.ReLU(),
            conv(width, width, 3, padding=1), torch.nn.ReLU())
        self.out = torch.nn.Linear(width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        covered = torch.nn.functional.interpolate(x[:, -1:], size=h.shape[2:])
        return self.out((h * covered).sum((2, 3)) / covered.sum((2, 3)).clamp(min=1.0))


def learned_probe(model_path: str, data: str, frames: int, xy_m: float, yaw_deg: float, steps: int,
                  train_frames: int) -> dict:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = load_runtime_model(model_path, "cpu")
    pairs = [(index, bev, T_true) for index, _, bev, T_true in _decoded_pairs(model, data, frames)]
    train = [p for p in pairs if p[0] < train_frames]
    test = [p for p in pairs if p[0] >= train_frames]
    if not train or not test:
        raise SystemExit(f"--train-frames {train_frames} leaves no training or no test frame of {len(pairs)}")
    scale = np.array([xy_m, xy_m, yaw_deg])

    def noised(pair, rng) -> tuple[torch.Tensor, np.ndarray]:
        _, bev, T_true = pair
        T_sent = noisy_pose(T_true, *(rng.standard_normal(3) * scale))
        correction = T_true @ np.linalg.inv(T_sent)
        warped = warp_to_ego(bev[1:], T_sent[None], model.grid)
        x = torch.cat([bev[:1], warped.features, warped.valid[:, None].float()], dim=1)
        dyaw = np.degrees(np.arctan2(correction[1, 0], correction[0, 0]))
        return x, np.array([correction[0, 3], correction[1, 3], dyaw]) / scale

    aligner = _Aligner(bev_channels := pairs[0][1].shape[1])
    optimizer = torch.optim.Adam(aligner.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        batch = [noised(train[j], rng) for j in rng.integers(0, len(train), 8)]
        target = torch.from_numpy(np.stack([b[1] for b in batch])).float()
        loss = torch.nn.functional.smooth_l1_loss(aligner(torch.cat([b[0] for b in batch])), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    rms = lambda v: [round(float(x), 3) for x in np.sqrt((np.array(v) ** 2).mean(axis=0)) * scale]  # noqa: E731

    def residuals(frames, seed: int) -> dict[str, list[float]]:
        """rms of the correction before and after the aligner's, four fresh draws per frame."""
        rng = np.random.default_rng(seed)
        before, after = [], []
        with torch.no_grad():
            for pair in frames:
                for _ in range(4):
                    x, target = noised(pair, rng)
                    before.append(target)
                    after.append(target - aligner(x)[0].numpy())
        return {"rms_before": rms(before), "rms_after": rms(after)}

    return {"model": model_path, "data": data, "pose_noise": [xy_m, yaw_deg], "bev_channels": bev_channels,
            "steps": steps, "train_frames": len(train), "test_frames": len(test),
            "learned": {**residuals(test, 1), "units": ["m", "m", "deg"],
                        "training_frames": residuals(train, 2)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--pose-noise", default="0.2,0.2", help="XY_M,YAW_DEG as revqom eval takes it")
    parser.add_argument("--learned-steps", type=int, default=0,
                        help="train and test the learned probe for this many steps instead (0: the others)")
    parser.add_argument("--train-frames", type=int, default=150,
                        help="the learned probe trains on the frames before this index, tests on the rest")
    args = parser.parse_args()
    xy_m, yaw_deg = (float(v) for v in args.pose_noise.split(","))
    if args.learned_steps:
        result = learned_probe(args.model, args.data, args.frames, xy_m, yaw_deg, args.learned_steps,
                               args.train_frames)
    else:
        result = probe(args.model, args.data, args.frames, xy_m, yaw_deg)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
