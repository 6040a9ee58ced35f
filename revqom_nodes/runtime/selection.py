"""Which partners an ego frame fuses: the comm range, then a partner count and a byte budget.

``select_partners`` is the one place that decides it; ``FusionEngine.fuse`` calls it, so the
fusion node and ``revqom eval`` fuse the same partners. Policy (README.md, fusion_node
parameters): a partner with a map to fuse (paired by the inbox: fresh, verified) is left out
when farther than ``comm_range_m`` from the ego. When the others are more than
``max_partners`` or their payloads more than ``max_bytes_per_frame``, the partners are taken
greedily by coverage: each step takes the partner whose occupied cells cover the most cells of
the ego's grid that neither the ego's own occupied cells nor the partners taken cover yet, per
byte of its payload (ties: the nearer, by the horizontal distance between the LiDARs as the
comm range measures it, then the agent id), while fewer than ``max_partners`` are taken; a
map larger than the bytes left is skipped, and a smaller one may still fit. Partners adding no
new cell are still taken while the limits allow (overlapping views still help the fusion).
When every partner fits the limits nothing is computed and all are fused.

Occupied cells come from the indices alone, without decoding (``EmptyCells``): a cell whose
receptive field holds no LiDAR point gets the same index tuple as its empty neighbours, but
which tuple depends on the whole map (the codec's bottleneck normalises with statistics over
all cells), so it is found per map: the most frequent tuple among the received cells of the
same class, the classes being the distinct tuples of an empty sweep's map (the interior, each
edge and corner, which the convolutions' zero padding sets apart). Only received cells count.
The occupied cells are warped into the ego grid with the fusion's own warp
(``perception.warp.warp_to_ego``); an ego cell is covered where more than half of its bilinear
weight is occupied.

Why coverage and not nearest first (docs/RESULTS.md, "Choosing partners"): on 3 vehicles and
2 roadside units the other vehicles are near but see what the ego sees, while the roadside
units, farther and mounted high, see what it cannot; nearest first picked the vehicles and
lost most of the gain of fusing. Why per byte, under a partner count too: a map's payload
grows with its occupied cells, so new cells per byte prefers a partner whose view is mostly
new over one that adds a fringe to a view the ego shares; it beat new cells alone in all six
measured cases (two egos; one or two partners, 12,000 bytes). The byte budget stands for the
ego's share of the channel.
The maps taken keep their given order (the agents' configured order), so that a frame within
the limits is fused as it was without them.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch

from revqom_nodes.geometry import invert
from revqom_nodes.perception.grid import BevGrid
from revqom_nodes.perception.sample import ground_distance_m
from revqom_nodes.perception.warp import VALID_THRESHOLD, warp_to_ego
from revqom_nodes.runtime.errors import RuntimeConfigError
from revqom_nodes.runtime.frames import AssembledMap

if TYPE_CHECKING:
    from revqom_nodes.runtime.model import RuntimeModel

_KEY_MAX = np.iinfo(np.int64).max


class NotFused(str, enum.Enum):
    """Why a partner's map is not fused in a frame; the values are FusionStatus.not_fused_reason's."""

    NO_MESSAGE = "no_message"  # nothing received from the agent (or all of it pushed out)
    STALE = "stale"  # its frames held are all farther than fusion.max_age_ms from the ego sweep
    OUT_OF_RANGE = "out_of_range"  # farther than the comm range from the ego
    MAX_PARTNERS = "max_partners"  # fusion.max_partners partners adding more new cells per byte were taken
    MAX_BYTES = "max_bytes"  # its payload exceeds what the partners taken left of fusion.max_bytes_per_frame


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


@dataclass(frozen=True, eq=False)
class EmptyCells:
    """Tells a map's occupied cells from its indices (module docstring)."""

    grid: BevGrid
    classes: np.ndarray  # (H, W) int64 0 .. num_classes - 1: cells of equal indices in an empty sweep's map
    num_classes: int
    codebook_size: int

    @classmethod
    def of(cls, model: RuntimeModel) -> EmptyCells:
        """Encode an empty sweep with ``model``; its map's distinct index tuples are the classes."""
        with torch.no_grad():
            indices = model.detector.encode_agent(torch.zeros(0, 4))[0].cpu().numpy()
        tuples, classes = np.unique(indices.reshape(len(indices), -1), axis=1, return_inverse=True)
        grid = model.grid
        return cls(grid, classes.reshape(grid.bev_shape), tuples.shape[1], model.settings.codebook_size)

    def occupied(self, maps: Sequence[AssembledMap]) -> np.ndarray:
        """A maps -> (A, H, W) bool: the received cells whose index tuple is not the most frequent
        one among the received cells of their class in the same map."""
        shape = (len(maps), *self.classes.shape)
        received = np.stack([np.ones(shape[1:], bool) if m.valid is None else m.valid for m in maps])
        occupied = np.zeros(shape, bool)
        if not received.any():
            return occupied
        num_groups = len(maps) * self.num_classes  # a group: one class of one map
        groups = (np.arange(len(maps))[:, None, None] * self.num_classes + self.classes).ravel()
        K = self.codebook_size
        key = groups  # (A * H * W,) the group, then the Q indices: one number, group first
        for stage in np.stack([m.indices for m in maps], axis=1).reshape(len(maps[0].indices), -1):
            if int(key.max()) > (_KEY_MAX - K) // K:
                key = np.unique(key, return_inverse=True)[1]  # dense labels in the same order
            key = key * K + stage
        groups, key = groups[received.ravel()], key[received.ravel()]  # (N,) the received cells
        ordered = np.sort(key)
        starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])  # (T,) each distinct tuple
        counts = np.diff(np.r_[starts, len(ordered)])
        group_of = np.repeat(np.arange(num_groups), np.bincount(groups, minlength=num_groups))[starts]
        by_count = np.lexsort((counts, group_of))  # by group, then count: each group's mode last
        mode = by_count[np.r_[group_of[by_count][1:] != group_of[by_count][:-1], True]]
        empty_key = np.full(num_groups, -1, np.int64)  # -1: no received cell in the group
        empty_key[group_of[mode]] = ordered[starts[mode]]
        occupied[received] = key != empty_key[groups]  # received: row-major, as ravel
        return occupied

    def covered(self, maps: Sequence[AssembledMap], T_ego_from_agent: np.ndarray) -> np.ndarray:
        """A maps and their (A, 4, 4) poses -> (A, H, W) bool: the ego-grid cells each map's
        occupied cells cover (``warp_to_ego``, the fusion's warp)."""
        occupancy = torch.from_numpy(self.occupied(maps)).unsqueeze(1).float()
        warped = warp_to_ego(occupancy, T_ego_from_agent, self.grid).features[:, 0]
        return (warped > VALID_THRESHOLD).numpy()


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
    empty_cells: EmptyCells | None = None,
) -> Selection:
    """The ego's map and each partner's (or why there is none) -> Selection (module docstring);
    ``empty_cells`` is needed when the partners in range exceed the limits."""
    T_ego_from_world = invert(ego.T_world_from_lidar)
    reasons: list[NotFused | None] = [p if isinstance(p, NotFused) else None for p in partners]
    in_range: list[int] = []
    poses: list[np.ndarray] = []
    for index, partner in enumerate(partners):
        if isinstance(partner, AssembledMap):
            T = T_ego_from_world @ partner.T_world_from_lidar
            if ground_distance_m(T) <= comm_range_m:
                in_range.append(index)
                poses.append(T)
            else:
                reasons[index] = NotFused.OUT_OF_RANGE
    sizes = [partners[i].payload_bytes for i in in_range]
    over_count = bool(limits.max_partners) and len(in_range) > limits.max_partners
    over_bytes = bool(limits.max_bytes_per_frame) and sum(sizes) > limits.max_bytes_per_frame
    if over_count or over_bytes:
        if empty_cells is None:
            raise ValueError("select_partners needs empty_cells when the partners exceed the limits")
        covers = empty_cells.covered([ego, *(partners[i] for i in in_range)], np.stack([np.eye(4), *poses]))
        covered, covers = covers[0], covers[1:]  # the ego's own occupied cells count as covered
        distances = [ground_distance_m(T) for T in poses]
        left = list(range(len(in_range)))
        taken, spent = 0, 0
        while left:
            if limits.max_partners and taken == limits.max_partners:
                for k in left:
                    reasons[in_range[k]] = NotFused.MAX_PARTNERS
                break
            for k in left:
                if limits.max_bytes_per_frame and spent + sizes[k] > limits.max_bytes_per_frame:
                    reasons[in_range[k]] = NotFused.MAX_BYTES
            left = [k for k in left if reasons[in_range[k]] is None]
            if not left:
                break
            gains = (covers[left] & ~covered).sum(axis=(1, 2)) / [sizes[k] for k in left]  # per byte
            best = min(range(len(left)),
                       key=lambda j: (-gains[j], distances[left[j]], partners[in_range[left[j]]].agent_id))
            k = left.pop(best)
            covered |= covers[k]
            taken, spent = taken + 1, spent + sizes[k]
    fused = [p for p, r in zip(partners, reasons, strict=True) if r is None]
    return Selection(fused, tuple(reasons))
