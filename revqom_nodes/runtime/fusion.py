"""``FusionEngine``: the ego's and its partners' validated frames -> detections in the ego frame.

Stages: codebook gather + post-affine decoder for every map (on the model's device; cells whose
slices were lost are zeroed) -> relative poses ``T_ego_from_agent = inv(T_world_from_ego) @
T_world_from_agent`` -> warp into the ego grid, fusion that ignores each map's missing cells,
head, NMS (``CooperativeDetector.detect_from_bev`` with the per-agent validity). The same calls
as the offline ``detect``, so a live frame and its offline twin agree.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from revqom_nodes.codec.receiver import CodecDecoder
from revqom_nodes.geometry import invert
from revqom_nodes.perception.postprocess import Detections
from revqom_nodes.perception.sample import in_comm_range
from revqom_nodes.runtime.errors import RuntimeConfigError
from revqom_nodes.runtime.frames import AgentFrame
from revqom_nodes.runtime.model import RuntimeModel


class FusionResult(NamedTuple):
    """One fused ego frame."""

    detections: Detections  # in the ego LiDAR frame
    fused_agent_ids: list[str]  # ego first
    T_ego_from_agent: np.ndarray  # (A, 4, 4) float64, parallel to fused_agent_ids
    decode_fuse_ms: float  # payload decoding of the fused frames + gather, decode, warp, fuse, head, NMS


def relative_poses(ego: AgentFrame, partners: Sequence[AgentFrame]) -> np.ndarray:
    """(A, 4, 4) T_ego_from_agent for the ego (identity) and each partner."""
    T_ego_from_world = invert(ego.T_world_from_lidar)
    return np.stack([np.eye(4)] + [T_ego_from_world @ p.T_world_from_lidar for p in partners])


class FusionEngine:
    """Decodes and fuses validated frames with a RuntimeModel (inference only).

    Partners farther than ``comm_range_m`` from the ego (``perception.sample.in_comm_range``)
    are left out, as in training and evaluation; None uses the model's setting.
    """

    def __init__(self, model: RuntimeModel, comm_range_m: float | None = None) -> None:
        self.model = model
        self.receiver = CodecDecoder(model.codec_state).to(model.device)
        self.comm_range_m = model.comm_range_m if comm_range_m is None else float(comm_range_m)

    @torch.no_grad()
    def fuse(self, ego: AgentFrame, partners: Sequence[AgentFrame | None]) -> FusionResult:
        """Frames carry their ``indices`` (set by validation or the inbox) and ``valid`` (None: every
        cell arrived); None partners are left out."""
        T_ego_from_world = invert(ego.T_world_from_lidar)
        frames = [ego, *[
            p for p in partners
            if p is not None and in_comm_range(T_ego_from_world @ p.T_world_from_lidar, self.comm_range_m)
        ]]
        if any(f.indices is None for f in frames):
            raise RuntimeConfigError("fuse() takes validated frames (their indices are missing)")
        device = self.model.device
        start = time.perf_counter()
        # One map at a time, as each arrives in its own messages and as ``revqom eval`` rebuilds them;
        # a map with lost slices is decoded from its received cells only, lost cells next to
        # received ones concealed (codec/conceal.py), the cells still missing zero and masked.
        decoded = [
            self.receiver.decode(
                torch.from_numpy(f.indices[None]),
                None if f.valid is None else torch.from_numpy(f.valid[None]),
            )
            for f in frames
        ]
        valid = [None if d.valid is None else d.valid[0] for d in decoded]
        poses = relative_poses(ego, frames[1:])
        detections = self.model.detector.detect_from_bev(
            [d.bev for d in decoded], poses, valid if any(v is not None for v in valid) else None
        )
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elapsed_ms = (time.perf_counter() - start) * 1e3 + sum(f.decode_ms for f in frames)
        return FusionResult(detections, [f.agent_id for f in frames], poses, elapsed_ms)
