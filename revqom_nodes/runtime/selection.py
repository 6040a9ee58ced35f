"""Which partners an ego frame fuses: the comm range, then a partner count and a byte budget.

``select_partners`` is the one place that decides it; ``FusionEngine.fuse`` calls it, so the
fusion node and ``revqom eval`` fuse the same partners. Policy (README.md, fusion_node
parameters): a partner with a map to fuse (paired by the inbox: fresh, verified) is left out
when farther than ``comm_range_m`` from the ego; the others are taken nearest first (the
horizontal distance between the LiDARs, as the comm range measures it; ties by agent id) while
``max_partners`` maps are not yet taken and the map's payload still fits what is left of
``max_bytes_per_frame``. A map larger than what is left is skipped, and a later, smaller one
may still fit. Nearest first because a near partner sees most of the ego's region of interest
and its pose error moves the warped map least (a rotation error shifts cells by the distance
times the angle); the byte budget stands for the ego's share of the channel. The maps taken
keep their given order (the agents' configured order), so that without limits the fusion is
the one it was.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import NamedTuple

from revqom_nodes.geometry import invert
from revqom_nodes.perception.sample import ground_distance_m
from revqom_nodes.runtime.errors import RuntimeConfigError
from revqom_nodes.runtime.frames import AssembledMap


class NotFused(str, enum.Enum):
    """Why a partner's map is not fused in a frame; the values are FusionStatus.not_fused_reason's."""

    NO_MESSAGE = "no_message"  # nothing received from the agent (or all of it pushed out)
    STALE = "stale"  # its frames held are all farther than fusion.max_age_ms from the ego sweep
    OUT_OF_RANGE = "out_of_range"  # farther than the comm range from the ego
    MAX_PARTNERS = "max_partners"  # fusion.max_partners nearer partners were taken
    MAX_BYTES = "max_bytes"  # its payload exceeds what nearer partners left of fusion.max_bytes_per_frame


class PartnerLimits(NamedTuple):
    """How many partners and payload bytes of theirs one ego frame fuses at most; 0: no limit."""

    max_partners: int = 0
    max_bytes_per_frame: int = 0

    def check(self) -> PartnerLimits:
        """Self, or RuntimeConfigError when a limit is negative."""
        if self.max_partners < 0 or self.max_bytes_per_frame < 0:
            raise RuntimeConfigError(
                f"need max_partners >= 0 and max_bytes_per_frame >= 0 (0: no limit); got "
                f"{self.max_partners}, {self.max_bytes_per_frame}"
            )
        return self


NO_LIMITS = PartnerLimits()


class Selection(NamedTuple):
    """The maps one ego frame fuses and why the other partners are not fused."""

    fused: list[AssembledMap]  # partners' maps taken, in the given order
    not_fused: tuple[NotFused | None, ...]  # parallel to the partners given; None: fused


def select_partners(
    ego: AssembledMap,
    partners: Sequence[AssembledMap | NotFused],
    *,
    comm_range_m: float,
    limits: PartnerLimits = NO_LIMITS,
) -> Selection:
    """The ego's map and each partner's (or why there is none) -> Selection (module docstring)."""
    T_ego_from_world = invert(ego.T_world_from_lidar)
    reasons: list[NotFused | None] = [p if isinstance(p, NotFused) else None for p in partners]
    distances: dict[int, float] = {}
    for index, partner in enumerate(partners):
        if isinstance(partner, AssembledMap):
            distance = ground_distance_m(T_ego_from_world @ partner.T_world_from_lidar)
            if distance <= comm_range_m:
                distances[index] = distance
            else:
                reasons[index] = NotFused.OUT_OF_RANGE
    taken, spent = 0, 0
    for index in sorted(distances, key=lambda i: (distances[i], partners[i].agent_id)):
        size = partners[index].payload_bytes
        if limits.max_partners and taken == limits.max_partners:
            reasons[index] = NotFused.MAX_PARTNERS
        elif limits.max_bytes_per_frame and spent + size > limits.max_bytes_per_frame:
            reasons[index] = NotFused.MAX_BYTES
        else:
            taken, spent = taken + 1, spent + size
    fused = [p for p, r in zip(partners, reasons, strict=True) if r is None]
    return Selection(fused, tuple(reasons))
