"""Which partners a frame fuses: the comm range, then nearest first within a count and a byte budget."""

from __future__ import annotations

import numpy as np
import pytest

from revqom_nodes.geometry import make_transform, rotation_z
from revqom_nodes.runtime.errors import RuntimeConfigError
from revqom_nodes.runtime.frames import AssembledMap
from revqom_nodes.runtime.fusion import FusionEngine
from revqom_nodes.runtime.selection import NotFused, PartnerLimits, select_partners
from revqom_nodes.runtime.validation import Expectations, check_frame
from tests.runtime.test_fusion_engine import T_WORLD_FROM_INFRA, T_WORLD_FROM_VEHICLE

T_WORLD_FROM_EGO = make_transform(rotation_z(0.7), [100.0, 50.0, 2.0])


def partner(agent_id: str, x_m: float, payload_bytes: int = 100, z_m: float = 0.0) -> AssembledMap:
    """A partner ``x_m`` ahead of the ego (along its x axis), ``z_m`` above it."""
    T = T_WORLD_FROM_EGO @ make_transform(rotation_z(1.0), [x_m, 0.0, z_m])
    indices = np.zeros((1, 2, 2), np.int64)
    return AssembledMap(agent_id, 0, f"{agent_id}_lidar", T, indices, None, payload_bytes, 0.0)


EGO = partner("ego", 0.0)


def fused_ids(partners, **limits: int) -> list[str]:
    return [p.agent_id for p in select_partners(EGO, partners, comm_range_m=100.0,
                                                limits=PartnerLimits(**limits)).fused]


def test_no_limits_fuses_every_partner_in_range_in_the_given_order() -> None:
    partners = [partner("b", 60.0), NotFused.STALE, partner("far", 150.0), partner("a", 5.0, z_m=120.0),
                NotFused.NO_MESSAGE]
    selection = select_partners(EGO, partners, comm_range_m=100.0)
    assert [p.agent_id for p in selection.fused] == ["b", "a"]  # the height difference does not count
    assert selection.not_fused == (None, NotFused.STALE, NotFused.OUT_OF_RANGE, None, NotFused.NO_MESSAGE)


def test_max_partners_takes_the_nearest_ties_by_agent_id() -> None:
    partners = [partner("d", 30.0), partner("c", 10.0), partner("b", 20.0), partner("a", 10.0)]
    assert fused_ids(partners, max_partners=2) == ["c", "a"]  # a and c tie at 10 m: both beat b
    assert fused_ids(partners, max_partners=1) == ["a"]
    assert fused_ids(partners, max_partners=9) == ["d", "c", "b", "a"]
    selection = select_partners(EGO, partners, comm_range_m=100.0, limits=PartnerLimits(max_partners=2))
    assert selection.not_fused == (NotFused.MAX_PARTNERS, None, NotFused.MAX_PARTNERS, None)


def test_a_map_over_the_bytes_left_is_skipped_and_a_later_smaller_one_taken() -> None:
    partners = [partner("near", 10.0, 600), partner("mid", 20.0, 500), partner("far", 30.0, 300)]
    budget = PartnerLimits(max_bytes_per_frame=1000)
    selection = select_partners(EGO, partners, comm_range_m=100.0, limits=budget)
    assert [p.agent_id for p in selection.fused] == ["near", "far"]
    assert selection.not_fused == (None, NotFused.MAX_BYTES, None)
    assert fused_ids(partners, max_bytes_per_frame=1400) == ["near", "mid", "far"]  # exactly the budget
    assert fused_ids(partners, max_bytes_per_frame=299) == []


def test_both_limits_hold_together() -> None:
    partners = [partner("near", 10.0, 600), partner("mid", 20.0, 500), partner("far", 30.0, 300),
                partner("farther", 40.0, 100)]
    selection = select_partners(EGO, partners, comm_range_m=100.0,
                                limits=PartnerLimits(max_partners=2, max_bytes_per_frame=1000))
    assert [p.agent_id for p in selection.fused] == ["near", "far"]
    assert selection.not_fused == (None, NotFused.MAX_BYTES, None, NotFused.MAX_PARTNERS)


def test_limits_must_not_be_negative(tiny_model) -> None:
    with pytest.raises(RuntimeConfigError, match="max_partners"):
        PartnerLimits(max_partners=-1).check()
    with pytest.raises(RuntimeConfigError, match="max_bytes_per_frame"):
        FusionEngine(tiny_model, limits=PartnerLimits(max_bytes_per_frame=-1))


def test_the_engine_fuses_what_the_selection_takes(tiny_model, make_frame) -> None:
    expect = Expectations.of(tiny_model)
    ego = check_frame(make_frame("vehicle", 1000, T_WORLD_FROM_VEHICLE), expect)
    near = check_frame(make_frame("infrastructure", 1000, T_WORLD_FROM_INFRA), expect)
    T_far = T_WORLD_FROM_INFRA.copy()
    T_far[0, 3] += 20.0
    far = check_frame(make_frame("vehicle_1", 1000, T_far), expect)
    limited = FusionEngine(tiny_model, limits=PartnerLimits(max_partners=1)).fuse(ego, [far, near])
    assert limited.fused_agent_ids == ["vehicle", "infrastructure"]
    assert limited.not_fused == (NotFused.MAX_PARTNERS, None) and limited.out_of_range == 0
    alone = FusionEngine(tiny_model).fuse(ego, [near])
    np.testing.assert_array_equal(limited.detections.boxes, alone.detections.boxes)
    everyone = FusionEngine(tiny_model).fuse(ego, [far, near])
    assert everyone.fused_agent_ids == ["vehicle", "vehicle_1", "infrastructure"]
    assert everyone.not_fused == (None, None)
