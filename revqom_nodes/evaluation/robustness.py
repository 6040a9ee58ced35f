"""Partners under V2X timing and localization error: delayed sweeps, noisy poses, the grid.

What ``revqom eval --delay-ms D --pose-noise XY_M,YAW_DEG [--noise-seed N]`` does to each
cooperative frame before the runner sees it (the ego's sweep and pose stay exact):

- delay: the partners' sweeps (and poses) are those of the pair k sweeps before the ego's
  (``data.perturbation.partner_schedule``, which training's ``train.partner_delay_ms`` shares).
  Their real age is k periods plus the dataset's own pairing offset (tens of ms, either sign): it
  is reported, never assumed. A frame with no such earlier pair (the first k of each sequence) is
  dropped and counted. D = 0 keeps every frame's own pair.
- pose noise: the pose each partner transmits is off by Gaussian noise, std XY_M metres on the
  world x and y of its LiDAR and YAW_DEG degrees on its yaw, drawn from the seed and the ego
  frame's index in the reader (``data.perturbation``, whose draw the replay's
  ``replay.pose_noise`` shares): the same frame gets the same error direction at every noise
  level, delay and model. Zero noise leaves poses as read.

``robustness_grid`` runs models over ``GRID_DELAYS_MS`` x ``GRID_POSE_NOISE``, every cell on the
same frames: those that have a pair ``max(GRID_DELAYS_MS)`` earlier. An ego-only model reads no
partner, so one evaluation fills its 25 cells.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, NamedTuple

import numpy as np
from tqdm import tqdm

from revqom_nodes.data.dairv2x import CooperativeFrame
from revqom_nodes.data.perturbation import (
    SWEEP_PERIOD_MS,
    PartnerSchedule,
    noisy_pose,
    partner_schedule,
    pose_errors,
)
from revqom_nodes.evaluation.errors import EvaluationError
from revqom_nodes.evaluation.runner import evaluate_model
from revqom_nodes.model_file import LoadedModel

GRID_DELAYS_MS: tuple[int, ...] = (0, 100, 200, 300, 400)
GRID_POSE_NOISE: tuple[tuple[float, float], ...] = (  # (xy_m, yaw_deg)
    (0.0, 0.0), (0.2, 0.2), (0.4, 0.4), (0.6, 0.6), (1.0, 1.0)
)


class PartnerPerturbation(NamedTuple):
    """Delay and pose noise applied to every partner (module docstring)."""

    delay_ms: float = 0.0
    pose_noise_xy_m: float = 0.0  # std on x and on y, metres
    pose_noise_yaw_deg: float = 0.0  # std on yaw, degrees
    noise_seed: int = 0


class PerturbedFrames(Sequence[CooperativeFrame]):
    """The frames of ``schedule``: each ego frame with the partners of its scheduled pair, their
    transmitted poses noised (module docstring); read on demand from ``frames``."""

    def __init__(
        self, frames: Sequence[CooperativeFrame], schedule: PartnerSchedule, perturbation: PartnerPerturbation
    ) -> None:
        self.frames, self.schedule, self.perturbation = frames, schedule, perturbation

    def __len__(self) -> int:
        return len(self.schedule.pairs)

    def __getitem__(self, index: int) -> CooperativeFrame:  # type: ignore[override]
        ego_index, partner_index = self.schedule.pairs[index]
        frame = self.frames[ego_index]
        partners = (frame if partner_index == ego_index else self.frames[partner_index]).agents[1:]
        p = self.perturbation
        if p.pose_noise_xy_m or p.pose_noise_yaw_deg:
            errors = pose_errors(
                p.noise_seed, ego_index, len(partners), p.pose_noise_xy_m, p.pose_noise_yaw_deg
            )
            partners = [
                replace(agent, T_world_from_lidar=noisy_pose(agent.T_world_from_lidar, *error))
                for agent, error in zip(partners, errors, strict=True)
            ]
        return replace(frame, agents=[frame.ego, *partners])


def perturbation_summary(perturbation: PartnerPerturbation, schedule: PartnerSchedule) -> dict[str, Any]:
    """The ``partner_perturbation`` entry of OUT.json: the settings, dropped frames, real partner ages."""
    ages = schedule.ages_ms
    age_ms = {"mean": float(np.mean(ages)), "min": min(ages), "max": max(ages)} if ages else None
    return {
        "delay_ms": perturbation.delay_ms,
        "pose_noise": [perturbation.pose_noise_xy_m, perturbation.pose_noise_yaw_deg],
        "noise_seed": perturbation.noise_seed,
        "sweep_period_ms": SWEEP_PERIOD_MS,
        "frames_dropped": schedule.dropped,
        "partner_age_ms": age_ms,
    }


def robustness_grid(
    models: Sequence[tuple[str, LoadedModel]],
    frames: Sequence[CooperativeFrame],
    stamps_us: Sequence[tuple[int, int]],
    *,
    noise_seed: int = 0,
    merge_ego_detections: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """AP of each (name, model) in every cell of delays x pose noise (module docstring) -> the
    R.json mapping: ``rows`` [{model, mode, delay_ms, pose_noise: [xy_m, yaw_deg], ap}], the frames
    used and dropped, and the partners' mean real age per delay. ``merge_ego_detections``: as
    ``evaluate_model``'s, for every model (those without an ego-only head ignore it)."""
    common = {i for i, _ in partner_schedule(stamps_us, max(GRID_DELAYS_MS)).pairs}
    if not common:
        raise EvaluationError(f"no frame has a partner sweep {max(GRID_DELAYS_MS):.0f} ms older")
    schedules = {}
    for delay_ms in GRID_DELAYS_MS:
        full = partner_schedule(stamps_us, delay_ms)
        kept = [(pair, age) for pair, age in zip(full.pairs, full.ages_ms, strict=True) if pair[0] in common]
        schedules[delay_ms] = PartnerSchedule([p for p, _ in kept], len(stamps_us) - len(kept),
                                              [a for _, a in kept])
    cells = [(d, n) for d in GRID_DELAYS_MS for n in GRID_POSE_NOISE]
    rows: list[dict[str, Any]] = []
    with tqdm(total=len(models) * len(cells), desc="robustness", unit="cell", disable=not progress) as bar:
        for name, loaded in models:
            ego_only = loaded.config.mode == "ego_only"
            ap = None
            for delay_ms, (xy_m, yaw_deg) in cells:
                if ap is None or not ego_only:
                    perturbation = PartnerPerturbation(delay_ms, xy_m, yaw_deg, noise_seed)
                    cell = PerturbedFrames(frames, schedules[delay_ms], perturbation)
                    result = evaluate_model(loaded, cell, name=name, progress=False,
                                            merge_ego_detections=merge_ego_detections)
                    ap, mode = result["ap"], result["mode"]
                rows.append({"model": name, "mode": mode, "delay_ms": delay_ms,
                             "pose_noise": [xy_m, yaw_deg], "ap": ap})
                bar.update()
    return {
        "frames": len(common),
        "frames_dropped": len(stamps_us) - len(common),
        "noise_seed": noise_seed,
        "merge_ego_detections": merge_ego_detections,
        "sweep_period_ms": SWEEP_PERIOD_MS,
        "partner_age_ms": {str(d): float(np.mean(s.ages_ms)) for d, s in schedules.items()},
        "rows": rows,
    }
