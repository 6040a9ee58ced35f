"""``FusionEngine``: the ego's and its partners' assembled maps -> detections in the ego frame.

Stages: the frozen receiver (``codec.receiver.CodecDecoder``: codebook gather + post-affine
decoder, on the model's device; cells whose slices were lost are concealed from received
neighbours or zeroed) for every map -> relative poses ``T_ego_from_agent = inv(T_world_from_ego)
@ T_world_from_agent`` -> warp into the ego grid, fusion that ignores each map's missing cells,
head (``CooperativeDetector.candidates_from_bev`` with the validity the receiver returns), NMS
(``postprocess.suppress``, the detections' one copy to the host). The
fusion node and ``revqom eval`` both run this engine, so a live frame and its offline twin agree.
Which partners are fused (the comm range, ``fusion.max_partners``, ``fusion.max_bytes_per_frame``)
is ``selection.select_partners``'s decision; the result says why each other one is not. Each
fused map's age (the ego's sweep stamp minus its own, up to the fusion node's
``fusion.max_age_ms``) comes back in the result. A frame that fuses no partner is detected by
the model's ego-only head when its file has one (``CooperativeDetector.head_for``), and the
result says so (``ego_head``). With ``merge_ego_detections`` (``fusion.merge_ego_detections``), a
frame that fuses partners is also detected on the ego's map alone by that head, and those boxes
join the cooperative ones in one more rotated NMS (``postprocess.merge_detections``): a partner
map misplaced by pose error can then no longer erase what the ego detects on its own (an
overlapping cooperative box that scores higher still replaces it; docs/RESULTS.md, "The ego's
own detections merged in"); a model without an ego-only head ignores it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from revqom_nodes.codec.receiver import CodecDecoder
from revqom_nodes.geometry import invert
from revqom_nodes.perception.postprocess import Detections, merge_detections, suppress
from revqom_nodes.runtime.frames import AssembledMap
from revqom_nodes.runtime.latency import now_ms
from revqom_nodes.runtime.model import RuntimeModel
from revqom_nodes.runtime.selection import NO_LIMITS, EmptyCells, NotFused, PartnerLimits, select_partners


class FusionResult(NamedTuple):
    """One fused ego frame, with the time each stage took (milliseconds)."""

    detections: Detections  # in the ego LiDAR frame
    fused_agent_ids: list[str]  # ego first
    T_ego_from_agent: np.ndarray  # (A, 4, 4) float64, parallel to fused_agent_ids
    unpack_ms: float  # payload -> indices of the fused maps (measured by validation)
    decode_ms: float  # indices -> features: codebook gather + post-affine decoder, every map
    fuse_ms: float  # warp, fusion, head, candidate boxes
    not_fused: tuple[NotFused | None, ...] = ()  # parallel to the partners given; None: fused
    ages_ms: tuple[float, ...] = ()  # ego stamp - map stamp, parallel to fused_agent_ids (ego: 0.0)
    nms_ms: float = 0.0  # rotated NMS, detections to the host
    ego_head: bool = False  # the ego-only head made the detections (no partner fused, the model has one)
    transfer_ms: float = 0.0  # the maps to a fusion process and the result back (fusion_process.py)
    merge_ms: float = 0.0  # the ego's own detections merged in: its map alone through the ego-only head, NMS

    @property
    def engine_ms(self) -> float:
        """The engine's stages: decode, fuse and head, NMS, merge."""
        return self.decode_ms + self.fuse_ms + self.nms_ms + self.merge_ms

    @property
    def out_of_range(self) -> int:
        """Partners' maps left out: farther than the comm range from the ego."""
        return self.not_fused.count(NotFused.OUT_OF_RANGE)

    @property
    def decode_fuse_ms(self) -> float:
        """Payload to detections, all stages."""
        return self.unpack_ms + self.engine_ms + self.transfer_ms


def relative_poses(ego: AssembledMap, partners: Sequence[AssembledMap]) -> np.ndarray:
    """(A, 4, 4) T_ego_from_agent for the ego (identity) and each partner."""
    T_ego_from_world = invert(ego.T_world_from_lidar)
    return np.stack([np.eye(4)] + [T_ego_from_world @ p.T_world_from_lidar for p in partners])


def stack_indices(maps: Sequence[AssembledMap], codebook_size: int) -> torch.Tensor:
    """The maps' (Q, H, W) indices -> one (A, Q, H, W) host tensor, uint8 when K <= 256 (an eighth
    of int64's bytes to the device), else int64."""
    dtype = np.uint8 if codebook_size <= 256 else np.int64
    return torch.from_numpy(np.stack([m.indices for m in maps]).astype(dtype, copy=False))


class FusionEngine:
    """Decodes and fuses assembled maps with a RuntimeModel (inference only).

    Partners farther than ``comm_range_m`` from the ego are left out, as in training and
    evaluation (None uses the model's setting), and at most ``limits`` of the others are fused,
    those adding the most occupied cells to the ego's per payload byte first
    (``selection.select_partners``; with limits, an empty sweep is encoded once here to tell the
    maps' empty cells).
    ``stage_timing``: on CUDA, wait for the device between stages so that ``decode_ms`` and
    ``fuse_ms`` are each their own stage's (benchmarks); False (the nodes): the host waits only
    for the detections' copy, and ``nms_ms`` holds the GPU time still queued then. The sum,
    ``decode_fuse_ms``, is exact either way; on the CPU both are the same.
    """

    def __init__(
        self,
        model: RuntimeModel,
        comm_range_m: float | None = None,
        *,
        limits: PartnerLimits = NO_LIMITS,
        merge_ego_detections: bool = False,
        stage_timing: bool = False,
    ) -> None:
        self.model = model
        self.merge_ego_detections = merge_ego_detections
        self.stage_timing = stage_timing
        self.receiver = CodecDecoder(model.codec_state).to(model.device)
        self.comm_range_m = model.comm_range_m if comm_range_m is None else float(comm_range_m)
        self.limits = limits.check()
        self.empty_cells = EmptyCells.of(model) if self.limits != NO_LIMITS else None

    @torch.no_grad()
    def fuse(self, ego: AssembledMap, partners: Sequence[AssembledMap | NotFused]) -> FusionResult:
        """The ego's map and each partner's (or why there is none) -> FusionResult."""
        selection = select_partners(ego, partners, comm_range_m=self.comm_range_m, limits=self.limits,
                                    empty_cells=self.empty_cells)
        maps = [ego, *selection.fused]
        device = self.model.device
        start = now_ms(device, wait=self.stage_timing)
        # Every map's indices go to the device in one upload (uint8 for K <= 256; the ranges were
        # checked on the host by validation), decoded in one call; a map with lost slices is
        # decoded from its received cells only (codec/conceal.py), the cells still missing masked.
        bev, valid = self.receiver.decode_agents(
            stack_indices(maps, self.model.settings.codebook_size),
            [None if m.valid is None else torch.from_numpy(m.valid) for m in maps],
        )
        after_decode = now_ms(device, wait=self.stage_timing)
        poses = relative_poses(ego, maps[1:])
        detector = self.model.detector
        candidates = detector.candidates_from_bev(
            bev, poses, valid if any(v is not None for v in valid) else None
        )
        after_fuse = now_ms(device, wait=self.stage_timing)
        detections = suppress(candidates, detector.config.head)  # on the host: nothing left to wait for
        end = now_ms(device, wait=False)
        merge_ms = 0.0
        if self.merge_ego_detections and len(maps) > 1 and detector.ego_head is not None:
            alone = suppress(detector.candidates_from_bev(bev[:1], poses[:1], None if valid[0] is None
                                                          else [valid[0]]), detector.config.head)
            detections = merge_detections([detections, alone], [poses[0], poses[0]], detector.config.head)
            merge_ms = now_ms(device, wait=False) - end
        return FusionResult(
            detections,
            [m.agent_id for m in maps],
            poses,
            sum(m.decode_ms for m in maps),
            after_decode - start,
            after_fuse - after_decode,
            selection.not_fused,
            tuple(m.age_ms(ego.stamp_ns) for m in maps),
            end - after_fuse,
            detector.head_for(len(maps)) is detector.ego_head,
            merge_ms=merge_ms,
        )
