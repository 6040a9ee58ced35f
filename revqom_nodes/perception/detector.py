"""The cooperative detector: the stages of perception tied together, for training and runtime.

Stage order (cooperative mode), with the typed hand-off between each:
points (N, 4) per agent -> ``Voxels`` -> backbone -> BEV (A, C, H, W)
-> codec (``CodecOutput``: every agent's map, the ego's included) -> ``warp_to_ego``
(``WarpedBev``) -> fusion (1, C, H, W) -> ``AnchorHead`` (``HeadOutput``) -> ``Detections``.

The runtime split follows the transmission boundary: an agent calls
``encode_agent(points) -> indices``; the ego rebuilds what it receives with the frozen
receiver (``codec.receiver.CodecDecoder``) and calls ``detect_from_bev(maps,
T_ego_from_agent, valid)``. ``detect`` runs the same path in one process. Inference methods
do not switch the module to eval mode: call ``model.eval()`` first.

Ego alone: with ``config.ego_head``, a frame that fuses no partner (the ego's map alone, as the
fusion node fuses when every partner is missing, stale or out of range) is detected by
``ego_head``, a second ``AnchorHead`` trained on such frames (``forward(..., ego_alone=True)``,
everything else frozen), instead of the cooperative ``head``; without it, by ``head``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from revqom_nodes.geometry import invert, transform_boxes
from revqom_nodes.perception.backbone import SparseBevBackbone, sparse_conv_algo
from revqom_nodes.perception.config import DetectorConfig
from revqom_nodes.perception.errors import PerceptionError
from revqom_nodes.perception.fusion import build_fusion
from revqom_nodes.perception.head import AnchorHead, HeadOutput, make_anchors
from revqom_nodes.perception.postprocess import (
    Candidates,
    Detections,
    merge_detections,
    select_candidates,
    suppress,
)
from revqom_nodes.perception.targets import assign_targets, detection_loss_terms
from revqom_nodes.perception.voxelize import voxelize_batch
from revqom_nodes.perception.warp import as_transforms, warp_to_ego

if TYPE_CHECKING:
    from revqom_nodes.codec import CodecLosses


class FrameInput(NamedTuple):
    """One cooperative frame for the detector."""

    points: list[Tensor]  # A clouds (N_a, 4) float32 x, y, z, intensity, own LiDAR frame, ego first
    T_ego_from_agent: Tensor  # (A, 4, 4) float64; entry 0 is the identity
    valid: Tensor | None = None  # (A, H, W) bool: cells of each agent's own map that arrived; None: all


class DetectorOutput(NamedTuple):
    """What ``forward`` returns for S maps (S = frames, or agents over all frames in late mode)."""

    head: HeadOutput
    view_frame: tuple[int, ...]  # (S,) index of the frame each map belongs to
    T_view_from_ego: Tensor  # (S, 4, 4) float64: moves that frame's ego-frame boxes into the map's frame
    codec_losses: CodecLosses | None
    perplexity: Tensor | None  # codec perplexity, as the codec reports it


class DetectionLosses(NamedTuple):
    """Named scalar losses; ``total`` is what to backpropagate."""

    total: Tensor
    classification: Tensor
    regression: Tensor
    direction: Tensor
    commitment: Tensor  # zero without a codec
    orthogonal: Tensor  # zero without a codec


def _as_array(values: np.ndarray | Tensor) -> np.ndarray:
    return values.detach().cpu().numpy() if isinstance(values, Tensor) else np.asarray(values)


def make_frame_input(
    points: Sequence[np.ndarray | Tensor],
    T_ego_from_agent: Sequence[np.ndarray] | Tensor,
    valid: np.ndarray | Tensor | None = None,
) -> FrameInput:
    """Numpy or torch clouds, poses and optional validity (A, H, W) -> FrameInput (float32 points,
    float64 poses, bool validity)."""
    clouds = [torch.as_tensor(_as_array(p), dtype=torch.float32) for p in points]
    T = as_transforms(T_ego_from_agent)
    if T.shape[0] != len(clouds):
        raise PerceptionError(f"{len(clouds)} point clouds but {T.shape[0]} transforms")
    mask = None if valid is None else torch.as_tensor(_as_array(valid), dtype=torch.bool)
    if mask is not None and (mask.dim() != 3 or mask.shape[0] != len(clouds)):
        raise PerceptionError(f"validity must be ({len(clouds)}, H, W), got {tuple(mask.shape)}")
    return FrameInput(points=clouds, T_ego_from_agent=T, valid=mask)


class CooperativeDetector(nn.Module):
    """Voxelizer, sparse backbone, optional codec, warp, fusion and anchor head (see module docstring)."""

    def __init__(self, config: DetectorConfig, *, device: torch.device) -> None:
        super().__init__()
        self.config = config
        self.grid = config.grid
        channels = config.backbone.bev_channels
        self.backbone = SparseBevBackbone(
            grid=config.grid,
            channels_3d=config.backbone.channels_3d,
            subm_blocks_per_level=config.backbone.subm_blocks_per_level,
            bev_channels=channels,
            bev_blocks=config.backbone.bev_blocks,
            algo=sparse_conv_algo(config.backbone.sparse_conv_algo, device),
        )
        self.codec: nn.Module | None = None
        if config.codec is not None:
            from revqom_nodes.codec import ReVQomCodec

            self.codec = ReVQomCodec(config.codec)
        self.fusion = (
            build_fusion(config.fusion.kind, channels=channels, num_heads=config.fusion.num_heads)
            if config.mode == "cooperative"
            else None
        )
        self.head = AnchorHead(channels=channels, num_rotations=len(config.head.anchor_rotations),
                               blocks=config.head.blocks)
        ego_blocks = config.head.blocks if config.ego_head_blocks is None else config.ego_head_blocks
        self.ego_head = (
            AnchorHead(channels=channels, num_rotations=len(config.head.anchor_rotations), blocks=ego_blocks)
            if config.ego_head
            else None
        )
        self.register_buffer("anchors", make_anchors(config.grid, config.head), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.anchors.device

    # ---- agent side -------------------------------------------------------------------------
    def bev_features_batch(self, points: Sequence[Tensor]) -> Tensor:
        """B clouds (N_b, 4), each in its own LiDAR frame -> BEV maps (B, C, H, W)."""
        return self.backbone(voxelize_batch([p.to(self.device) for p in points], self.grid))

    def bev_features(self, points: Tensor) -> Tensor:
        """One cloud (N, 4) -> its BEV map (1, C, H, W)."""
        return self.bev_features_batch([points])

    @torch.no_grad()
    def encode_agent(self, points: Tensor) -> Tensor:
        """One cloud (N, 4) -> codebook indices (1, Q, H, W) int64: what an agent transmits."""
        return self._require_codec().encode(self.bev_features(points))

    # ---- ego side ---------------------------------------------------------------------------
    @torch.no_grad()
    def detect_from_bev(
        self,
        maps: Sequence[Tensor],
        T_ego_from_agent: Sequence[np.ndarray] | Tensor,
        valid: Sequence[Tensor | None] | None = None,
    ) -> Detections:
        """Cooperative: A maps (1, C, H, W) in their own grids (ego first), their poses and optional
        per-cell validity (H, W) bool per agent (None = all valid) -> Detections in the ego frame
        (``candidates_from_bev``, then NMS). ego_only: exactly one map, the ego's."""
        if self.config.mode == "ego_only":
            if len(maps) != 1:
                raise PerceptionError(f"ego_only mode takes the ego's map alone, got {len(maps)} maps")
            return self.detect_own_map(maps[0])
        return suppress(self.candidates_from_bev(maps, T_ego_from_agent, valid), self.config.head)

    @torch.no_grad()
    def candidates_from_bev(
        self,
        maps: Sequence[Tensor] | Tensor,
        T_ego_from_agent: Sequence[np.ndarray] | Tensor,
        valid: Sequence[Tensor | None] | None = None,
    ) -> Candidates:
        """Cooperative: what ``detect_from_bev`` takes (or the maps as one (A, C, H, W) tensor, not
        copied again) -> warp, fusion, head and the boxes before NMS, on the device. One map (the
        ego's alone) goes to ``ego_head`` when the model has one."""
        if self.config.mode == "late":
            raise PerceptionError("late fusion exchanges boxes: use detect_own_map and merge_detections")
        if self.config.mode == "ego_only":
            raise PerceptionError("ego_only mode fuses nothing: use detect_own_map")
        if isinstance(maps, Tensor):
            features = maps.to(self.device)
        else:
            features = torch.cat([m.to(self.device) for m in maps], dim=0)
        height, width = self.grid.bev_shape
        masks = None
        if valid is not None:
            if len(valid) != len(maps):
                raise PerceptionError(f"{len(maps)} maps but {len(valid)} validity masks")
            ones = torch.ones(height, width, dtype=torch.bool, device=self.device)
            masks = torch.stack(
                [ones if v is None else v.to(self.device).reshape(height, width) for v in valid]
            )
        fused = self._fuse(features, as_transforms(T_ego_from_agent), masks)
        return self._candidates(self.head_for(len(maps))(fused))

    def head_for(self, num_maps: int) -> AnchorHead:
        """The head that detects on a fusion of ``num_maps`` maps (the ego's included): ``ego_head``
        for the ego's map alone when the model has one, else ``head``."""
        return self.ego_head if num_maps == 1 and self.ego_head is not None else self.head

    @torch.no_grad()
    def detect_own_map(self, bev: Tensor) -> Detections:
        """ego_only / late: one map (1, C, H, W) -> Detections in that map's own frame."""
        if self.config.mode == "cooperative":
            raise PerceptionError("cooperative mode detects on fused maps: use detect_from_bev")
        return self._decode(self.head(bev.to(self.device)))

    @torch.no_grad()
    def detect(
        self, points: Sequence[np.ndarray | Tensor], T_ego_from_agent: Sequence[np.ndarray] | Tensor
    ) -> Detections:
        """A clouds (ego first) and their poses -> Detections in the ego frame, through the same
        path as the runtime (encode -> decode -> detect_from_bev when a codec is configured)."""
        frame = make_frame_input(points, T_ego_from_agent)
        if self.config.mode == "ego_only":
            return self.detect_own_map(self.bev_features(frame.points[0]))
        maps = self.bev_features_batch(frame.points)
        if self.config.mode == "late":
            per_agent = [self.detect_own_map(m) for m in maps.split(1)]
            return merge_detections(per_agent, list(frame.T_ego_from_agent.numpy()), self.config.head)
        if self.codec is not None:
            maps = self.codec.decode(self.codec.encode(maps))
        return self.detect_from_bev(list(maps.split(1)), frame.T_ego_from_agent)

    # ---- training ---------------------------------------------------------------------------
    def forward(self, batch: Sequence[FrameInput], *, ego_alone: bool = False) -> DetectorOutput:
        """B frames -> head outputs (and codec losses) for training; see DetectorOutput.

        ``ego_alone`` (a model with ``ego_head``): each frame's ego map alone, through the codec and
        the fusion as the runtime runs it, without gradient, then ``ego_head``; the partners'
        clouds are ignored. Keep everything but ``ego_head`` in eval mode (frozen)."""
        if ego_alone:
            return self._forward_ego_alone(batch)
        if self.config.mode == "ego_only":
            maps = self.bev_features_batch([frame.points[0] for frame in batch])
            identity = torch.eye(4, dtype=torch.float64).expand(len(batch), 4, 4)
            return DetectorOutput(self.head(maps), tuple(range(len(batch))), identity, None, None)
        counts = [len(frame.points) for frame in batch]
        maps = self.bev_features_batch([p for frame in batch for p in frame.points])
        poses = torch.cat([as_transforms(frame.T_ego_from_agent) for frame in batch])
        if self.config.mode == "late":
            view_frame = tuple(i for i, n in enumerate(counts) for _ in range(n))
            T_view_from_ego = torch.from_numpy(np.stack([invert(T) for T in poses.numpy()]))
            return DetectorOutput(self.head(maps), view_frame, T_view_from_ego, None, None)
        codec_losses = perplexity = None
        held: list[Tensor | None] = [None if f.valid is None else f.valid.to(self.device) for f in batch]
        if self.codec is not None:
            valid = None
            if any(frame.valid is not None for frame in batch):
                valid = torch.cat([
                    torch.ones((len(frame.points), *self.grid.bev_shape), dtype=torch.bool)
                    if frame.valid is None else frame.valid
                    for frame in batch
                ]).to(self.device)
            coded = self.codec(maps, valid)
            maps, codec_losses, perplexity = coded.bev, coded.losses, coded.perplexity
            if coded.valid is not None:  # the cells each decoded map holds, concealed ones included
                decoded = coded.valid.split(counts)
                held = [None if v is None else c for v, c in zip(held, decoded, strict=True)]
        fused = [
            self._fuse(frame_maps, frame_poses, frame_valid)
            for frame_maps, frame_poses, frame_valid in zip(
                maps.split(counts), poses.split(counts), held, strict=True
            )
        ]
        identity = torch.eye(4, dtype=torch.float64).expand(len(batch), 4, 4)
        head = self._heads(torch.cat(fused), counts)
        return DetectorOutput(head, tuple(range(len(batch))), identity, codec_losses, perplexity)

    def loss(self, outputs: DetectorOutput, gt_boxes: Sequence[np.ndarray | Tensor]) -> DetectionLosses:
        """Outputs of ``forward`` and each frame's ground truth (M_b, 7) in its ego frame -> losses.

        In late mode each agent's map is trained on the frame's boxes moved into that
        agent's frame (boxes it cannot see included, like the ego's in the other modes).
        """
        if max(outputs.view_frame) >= len(gt_boxes):
            raise PerceptionError(
                f"outputs cover {max(outputs.view_frame) + 1} frames, got {len(gt_boxes)} ground-truth sets"
            )
        targets = []
        for view, frame in enumerate(outputs.view_frame):
            in_view = transform_boxes(outputs.T_view_from_ego[view].numpy(), _as_array(gt_boxes[frame]))
            targets.append(assign_targets(self.anchors, torch.from_numpy(in_view).float(), self.config.head))
        terms = detection_loss_terms(outputs.head, targets, self.config.head)
        zero = terms.classification.new_zeros(())
        commitment = outputs.codec_losses.commitment if outputs.codec_losses is not None else zero
        orthogonal = outputs.codec_losses.orthogonal if outputs.codec_losses is not None else zero
        total = terms.classification + terms.regression + terms.direction + commitment + orthogonal
        return DetectionLosses(total, *terms, commitment, orthogonal)

    # ---- internals --------------------------------------------------------------------------
    def _forward_ego_alone(self, batch: Sequence[FrameInput]) -> DetectorOutput:
        """B frames -> ``ego_head``'s outputs (B maps) on each ego's decoded map (1, C, H, W) fused
        alone; only ``ego_head`` gets gradients."""
        if self.ego_head is None:
            raise PerceptionError("ego_alone trains the ego-only head: this model has none (config.ego_head)")
        identity = torch.eye(4, dtype=torch.float64).expand(len(batch), 4, 4)
        with torch.no_grad():
            maps = self.bev_features_batch([frame.points[0] for frame in batch])
            if self.codec is not None:
                maps = self.codec.decode(self.codec.encode(maps))
            fused = torch.cat([self._fuse(m, identity[:1], None) for m in maps.split(1)])
        return DetectorOutput(self.ego_head(fused), tuple(range(len(batch))), identity, None, None)

    def _heads(self, fused: Tensor, counts: Sequence[int]) -> HeadOutput:
        """(B, C, H, W) fused maps of frames of ``counts`` maps each -> every frame's outputs from
        ``head_for`` its count, as the runtime detects: with ``ego_head``, a frame of the ego alone
        (partner dropout) trains it together with everything before it."""
        alone = torch.tensor([self.head_for(n) is not self.head for n in counts], device=fused.device)
        if not alone.any():
            return self.head(fused)
        if alone.all():
            return self.ego_head(fused)
        order = torch.cat([torch.nonzero(alone).squeeze(1), torch.nonzero(~alone).squeeze(1)])
        parts = zip(self.ego_head(fused[alone]), self.head(fused[~alone]), strict=True)
        return HeadOutput(*(torch.cat(pair)[torch.argsort(order)] for pair in parts))

    def _fuse(self, maps: Tensor, T_ego_from_agent: Tensor, valid: Tensor | None) -> Tensor:
        warped = warp_to_ego(maps, T_ego_from_agent, self.grid, valid)
        return self.fusion(warped.features, warped.valid)

    def _decode(self, head: HeadOutput) -> Detections:
        """Head outputs of one map -> its Detections."""
        return suppress(self._candidates(head), self.config.head)

    def _candidates(self, head: HeadOutput) -> Candidates:
        """Head outputs of one map -> its boxes before NMS."""
        return select_candidates(
            head.class_logits[0], head.box_deltas[0], head.direction_logits[0], self.anchors, self.config.head
        )

    def _require_codec(self) -> nn.Module:
        if self.codec is None:
            raise PerceptionError("this detector has no codec (config.codec is null)")
        return self.codec


def build_detector(config: DetectorConfig, device: torch.device | str = "cpu") -> CooperativeDetector:
    """Construct the detector for ``config`` on ``device`` (which also picks the sparse conv algorithm)."""
    device = torch.device(device)
    return CooperativeDetector(config, device=device).to(device)
