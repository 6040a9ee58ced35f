"""Detector configuration: frozen dataclasses, loaded from YAML mappings with unknown keys an error.

The one home of every perception default. ``DetectorConfig.from_dict`` takes the
resolved mapping (``grid``, ``backbone``, ``fusion``, ``head``, ``codec``, ``mode``);
``to_dict`` gives it back for saving inside a model file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from revqom_nodes.perception.errors import PerceptionError
from revqom_nodes.perception.grid import BevGrid

if TYPE_CHECKING:
    from revqom_nodes.codec import CodecConfig

MODES = ("cooperative", "ego_only", "late")


def _check_keys(cls: type, values: Mapping[str, Any], where: str) -> None:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise PerceptionError(f"unknown {where} keys {unknown}; valid keys: {sorted(known)}")


def _tuples(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


@dataclass(frozen=True)
class BackboneConfig:
    """Sparse 3D backbone and BEV block (see backbone.py)."""

    channels_3d: tuple[int, ...] = (16, 32)  # stem + one per stride-2 stage: 1 + log2(bev_stride)
    subm_blocks_per_level: int = 1
    bev_channels: int = 64  # C of the BEV map (= the codec's ``channels``)
    bev_blocks: int = 2
    sparse_conv_algo: str = "auto"  # "auto" (Native on CPU, implicit GEMM on CUDA), "native", "implicit_gemm"


@dataclass(frozen=True)
class FusionConfig:
    """Multi-agent fusion (see fusion.py)."""

    kind: str = "attention"  # "attention" or "max"
    num_heads: int = 4


@dataclass(frozen=True)
class HeadConfig:
    """Anchor head, target assignment, losses and post-processing (one class: vehicle)."""

    anchor_size_m: tuple[float, float, float] = (4.5, 2.0, 1.6)  # l, w, h
    anchor_z_m: float = -1.0  # anchor centre height in the ego LiDAR frame
    anchor_rotations: tuple[float, ...] = (0.0, math.pi / 2)
    positive_iou: float = 0.6
    negative_iou: float = 0.45
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    classification_weight: float = 1.0
    regression_weight: float = 2.0
    direction_weight: float = 0.2
    score_threshold: float = 0.2
    nms_iou: float = 0.15
    pre_nms_top_k: int = 512
    max_detections: int = 100
    blocks: int = 0  # 3x3 conv blocks on the (fused) map before the 1x1 outputs: spatial context

    def __post_init__(self) -> None:
        if isinstance(self.blocks, bool) or not isinstance(self.blocks, int) or self.blocks < 0:
            raise PerceptionError(f"head blocks must be an int >= 0, got {self.blocks!r}")
        if not 0.0 <= self.negative_iou <= self.positive_iou <= 1.0:
            raise PerceptionError(
                f"need 0 <= negative_iou <= positive_iou <= 1, got {self.negative_iou}, {self.positive_iou}"
            )
        if len(self.anchor_size_m) != 3 or min(self.anchor_size_m) <= 0:
            raise PerceptionError(f"anchor_size_m must be 3 positive values, got {self.anchor_size_m}")
        if not self.anchor_rotations:
            raise PerceptionError("anchor_rotations must not be empty")


@dataclass(frozen=True)
class DetectorConfig:
    """Everything ``build_detector`` needs.

    ``codec`` None means raw-feature fusion. ``mode``: "cooperative" (every
    agent's map, through the codec when configured, warped and fused),
    "ego_only" (the ego's map alone; sends nothing, so no codec) or "late"
    (each agent detects on its own map, boxes merged in the ego frame; no codec).
    ``ego_head`` (cooperative only): a second head for the frames that fuse no partner
    (detector.py), with ``ego_head_blocks`` 3x3 blocks (None: ``head.blocks``, the same shape).
    """

    grid: BevGrid = field(default_factory=BevGrid)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    codec: CodecConfig | None = None
    mode: str = "cooperative"
    ego_head: bool = False
    ego_head_blocks: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise PerceptionError(f"unknown mode {self.mode!r}; valid: {list(MODES)}")
        if not isinstance(self.ego_head, bool):
            raise PerceptionError(f"ego_head must be true or false, got {self.ego_head!r}")
        if self.ego_head and self.mode != "cooperative":
            raise PerceptionError(f"mode {self.mode!r} has one head: set ego_head to false")
        blocks = self.ego_head_blocks
        if blocks is not None and (not self.ego_head or isinstance(blocks, bool)
                                   or not isinstance(blocks, int) or blocks < 0):
            raise PerceptionError(f"ego_head_blocks must be null, or an int >= 0 with ego_head: {blocks!r}")
        if self.codec is not None:
            if self.mode != "cooperative":
                raise PerceptionError(f"mode {self.mode!r} sends no feature maps: set codec to null")
            channels = self.codec.channels
            if channels != self.backbone.bev_channels:
                raise PerceptionError(
                    f"codec channels {channels} != backbone bev_channels {self.backbone.bev_channels}"
                )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> DetectorConfig:
        """Build from a resolved YAML mapping; every section optional, unknown keys an error."""
        _check_keys(cls, values, "detector")
        sections: dict[str, Any] = {}
        if "grid" in values:
            sections["grid"] = BevGrid.from_dict(values["grid"])
        simple_sections = (("backbone", BackboneConfig), ("fusion", FusionConfig), ("head", HeadConfig))
        for name, section_cls in simple_sections:
            if name in values:
                _check_keys(section_cls, values[name], name)
                sections[name] = section_cls(**_tuples(values[name]))
        if values.get("codec") is not None:
            from revqom_nodes.codec import CodecConfig

            sections["codec"] = CodecConfig.from_dict(dict(values["codec"]))
        for name in ("mode", "ego_head", "ego_head_blocks"):
            if name in values:
                sections[name] = values[name]
        return cls(**sections)

    def to_dict(self) -> dict[str, Any]:
        """Plain mapping (lists, no tuples) that ``from_dict`` reads back."""

        def plain(value: Any) -> Any:
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            if isinstance(value, (tuple, list)):
                return [plain(v) for v in value]
            return value

        return {
            "grid": self.grid.to_dict(),
            "backbone": plain(asdict(self.backbone)),
            "fusion": plain(asdict(self.fusion)),
            "head": plain(asdict(self.head)),
            "codec": None if self.codec is None else self.codec.to_dict(),
            "mode": self.mode,
            "ego_head": self.ego_head,
            "ego_head_blocks": self.ego_head_blocks,
        }
