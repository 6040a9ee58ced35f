"""Which partners a frame fuses: the comm range, then the most new occupied cells within a count
and a byte budget."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from revqom_nodes.geometry import invert, make_transform, rotation_z
from revqom_nodes.perception.bench import raycast_cloud
from revqom_nodes.perception.grid import BevGrid
from revqom_nodes.perception.sample import crop_to_grid
from revqom_nodes.runtime.errors import RuntimeConfigError
from revqom_nodes.runtime.frames import AssembledMap
from revqom_nodes.runtime.fusion import FusionEngine
from revqom_nodes.runtime.model import load_runtime_model
from revqom_nodes.runtime.selection import EmptyCells, NotFused, PartnerLimits, select_partners
from revqom_nodes.runtime.validation import Expectations, check_frame
from revqom_nodes.scenario.demo import BUNDLED_MODEL
from revqom_nodes.share import package_share_directory
from tests.runtime.test_fusion_engine import T_WORLD_FROM_INFRA, T_WORLD_FROM_VEHICLE

T_WORLD_FROM_EGO = make_transform(rotation_z(0.7), [100.0, 50.0, 2.0])
GRID = BevGrid(x_range_m=(-12.8, 12.8), y_range_m=(-12.8, 12.8), voxel_size_m=(0.4, 0.4, 0.5))  # 32 x 32
EMPTY = EmptyCells(GRID, np.zeros(GRID.bev_shape, np.int64), 1, codebook_size=4)  # one class
BACKGROUND, OBJECT = (0, 0), (1, 2)  # index pairs (Q = 2) of the empty cells and of the occupied ones


def partner(
    agent_id: str,
    x_m: float,
    payload_bytes: int = 100,
    z_m: float = 0.0,
    sees: tuple[float, float, float, float] | None = None,
    yaw: float = 1.0,
) -> AssembledMap:
    """A partner ``x_m`` ahead of the ego (along its x axis), ``z_m`` above it, turned by ``yaw``;
    its map is occupied where its cell centres fall in ``sees`` (x_min, y_min, x_max, y_max in the
    ego frame, metres), empty elsewhere."""
    T_ego_from_agent = make_transform(rotation_z(yaw), [x_m, 0.0, z_m])
    indices = np.zeros((2, *GRID.bev_shape), np.int64)
    indices[:] = np.array(BACKGROUND)[:, None, None]
    if sees is not None:
        xs, ys = GRID.cell_centres()
        x, y = np.meshgrid(xs, ys)  # (H, W): row i along y, column j along x
        centres = np.stack([x.ravel(), y.ravel(), np.zeros(x.size), np.ones(x.size)])
        ego_x, ego_y = (T_ego_from_agent @ centres)[:2].reshape(2, *GRID.bev_shape)
        x_min, y_min, x_max, y_max = sees
        inside = (ego_x > x_min) & (ego_x < x_max) & (ego_y > y_min) & (ego_y < y_max)
        assert inside.any(), f"{agent_id}: {sees} lies outside its map"
        indices[:, inside] = np.array(OBJECT)[:, None]
    T = T_WORLD_FROM_EGO @ T_ego_from_agent
    return AssembledMap(agent_id, 0, f"{agent_id}_lidar", T, indices, None, payload_bytes, 0.0)


EGO = partner("ego", 0.0, sees=(-4.0, -4.0, 4.0, 4.0), yaw=0.0)


def select(partners, ego: AssembledMap = EGO, **limits: int):
    return select_partners(ego, partners, comm_range_m=100.0, limits=PartnerLimits(**limits),
                           empty_cells=EMPTY)


def fused_ids(partners, **limits: int) -> list[str]:
    return [p.agent_id for p in select(partners, **limits).fused]


def test_no_limits_fuses_every_partner_in_range_in_the_given_order() -> None:
    partners = [partner("b", 60.0), NotFused.STALE, partner("far", 150.0), partner("a", 5.0, z_m=120.0),
                NotFused.NO_MESSAGE]
    selection = select_partners(EGO, partners, comm_range_m=100.0)  # nothing to choose: no empty cells needed
    assert [p.agent_id for p in selection.fused] == ["b", "a"]  # the height difference does not count
    assert selection.not_fused == (None, NotFused.STALE, NotFused.OUT_OF_RANGE, None, NotFused.NO_MESSAGE)
    within = select_partners(EGO, partners, comm_range_m=100.0, limits=PartnerLimits(2, 200))
    assert within == selection  # limits that every partner fits change nothing


def test_a_partner_covering_new_cells_beats_a_nearer_one_whose_cells_the_ego_covers() -> None:
    partners = [partner("near", 3.0, sees=(-3.0, -3.0, 3.0, 3.0)),  # inside the ego's own view
                partner("far", 9.0, sees=(6.0, -3.0, 12.0, 3.0))]
    selection = select(partners, max_partners=1)
    assert [p.agent_id for p in selection.fused] == ["far"]
    assert selection.not_fused == (NotFused.MAX_PARTNERS, None)
    ego_blind = replace(EGO, indices=np.zeros_like(EGO.indices))  # sees nothing: near's cells are new
    bigger = [partner("near", 3.0, sees=(-6.0, -6.0, 6.0, 6.0)), partners[1]]
    assert [p.agent_id for p in select(bigger, ego_blind, max_partners=1).fused] == ["near"]


def test_each_step_counts_only_the_cells_not_yet_covered() -> None:
    partners = [partner("a", 5.0, sees=(5.0, -8.0, 11.0, 8.0)),    # 6 x 16 m
                partner("b", 6.0, sees=(5.0, -8.0, 11.0, 6.0)),    # inside a's: nothing new after a
                partner("c", -7.0, sees=(-11.0, -5.0, -6.0, 5.0))]  # 5 x 10 m elsewhere, farther
    assert fused_ids(partners, max_partners=2) == ["a", "c"]  # b covers more than c, but not after a
    assert fused_ids(partners, max_partners=1) == ["a"]


def test_empty_cells_do_not_count_whatever_their_indices() -> None:
    blank = partner("blank", 2.0)
    blank = replace(blank, indices=np.full_like(blank.indices, 3))  # one tuple everywhere: all empty
    small = partner("small", 9.0, sees=(8.0, -2.0, 11.0, 2.0))
    assert not EMPTY.occupied([blank]).any()
    assert fused_ids([blank, small], max_partners=1) == ["small"]
    # classes: the border ring of an empty sweep's map encodes apart from the interior
    ring = np.ones(GRID.bev_shape, np.int64)
    ring[1:-1, 1:-1] = 0
    classes = EmptyCells(GRID, ring, 2, codebook_size=4)
    edged = replace(small, indices=np.where(ring.astype(bool), 3, small.indices))  # the ring's empty: (3, 3)
    np.testing.assert_array_equal(classes.occupied([edged])[0], EMPTY.occupied([small])[0])
    assert EMPTY.occupied([edged])[0][ring.astype(bool)].all()  # without the classes the ring would count


def test_a_partly_received_map_counts_only_its_received_cells() -> None:
    wide = partner("wide", 3.0, sees=(5.0, -10.0, 12.0, 10.0))
    narrow = partner("narrow", -5.0, sees=(-12.0, -4.0, -6.0, 4.0))
    assert fused_ids([wide, narrow], max_partners=1) == ["wide"]
    received = np.zeros(GRID.bev_shape, bool)
    received[::8] = True  # an eighth of the rows arrived
    lossy = replace(wide, valid=received, indices=np.where(received, wide.indices, 0))
    occupied = EMPTY.occupied([wide, lossy])
    assert not occupied[1][~received].any()
    np.testing.assert_array_equal(occupied[1], occupied[0] & received)
    assert fused_ids([lossy, narrow], max_partners=1) == ["narrow"]
    nothing = replace(wide, valid=np.zeros(GRID.bev_shape, bool))
    assert not EMPTY.occupied([nothing]).any()


def test_ties_go_to_the_nearest_then_the_agent_id() -> None:
    partners = [partner("d", 30.0), partner("c", 10.0), partner("b", 20.0), partner("a", 10.0)]  # see nothing
    assert fused_ids(partners, max_partners=2) == ["c", "a"]  # a and c tie at 10 m: both beat b
    assert fused_ids(partners, max_partners=1) == ["a"]
    assert fused_ids(partners, max_partners=9) == ["d", "c", "b", "a"]
    reasons = select(partners, max_partners=2).not_fused
    assert reasons == (NotFused.MAX_PARTNERS, None, NotFused.MAX_PARTNERS, None)


def budgeted(tiny: bool = False) -> list[AssembledMap]:
    """Partners 2-4 m from the ego (not turned) whose new cells per byte rank big, mid, small."""
    partners = [partner("big", 2.0, 600, sees=(6.0, -10.0, 12.0, 10.0), yaw=0.0),     # 6 x 20 m
                partner("mid", -2.0, 500, sees=(-12.0, -10.0, -8.0, 10.0), yaw=0.0),  # 4 x 20 m
                partner("small", 3.0, 300, sees=(-2.0, 6.0, 2.0, 10.0), yaw=0.0)]     # 4 x 4 m
    return [*partners, partner("tiny", 4.0, 100, yaw=0.0)] if tiny else partners


def test_a_map_over_the_bytes_left_is_skipped_and_a_smaller_one_taken() -> None:
    partners = budgeted()
    selection = select(partners, max_bytes_per_frame=1000)
    assert [p.agent_id for p in selection.fused] == ["big", "small"]
    assert selection.not_fused == (None, NotFused.MAX_BYTES, None)
    assert fused_ids(partners, max_bytes_per_frame=1100) == ["big", "mid"]  # mid adds more than small
    assert fused_ids(partners, max_bytes_per_frame=1400) == ["big", "mid", "small"]  # exactly the budget
    assert fused_ids(partners, max_bytes_per_frame=299) == []


def test_new_cells_count_per_payload_byte() -> None:
    partners = [partner("rich", 2.0, 1000, sees=(6.0, -10.0, 12.0, 10.0), yaw=0.0),  # 6 x 20 m
                partner("cheap", -3.0, 200, sees=(-12.0, -4.0, -8.0, 4.0), yaw=0.0)]  # 4 x 8 m
    assert fused_ids(partners, max_partners=1) == ["cheap"]
    assert fused_ids([replace(partners[0], payload_bytes=200), partners[1]], max_partners=1) == ["rich"]
    assert fused_ids(partners, max_bytes_per_frame=1100) == ["cheap"]  # then rich no longer fits


def test_both_limits_hold_together() -> None:
    selection = select(budgeted(tiny=True), max_partners=2, max_bytes_per_frame=1000)
    assert [p.agent_id for p in selection.fused] == ["big", "small"]
    assert selection.not_fused == (None, NotFused.MAX_BYTES, None, NotFused.MAX_PARTNERS)


def test_limits_must_not_be_negative(tiny_model) -> None:
    with pytest.raises(RuntimeConfigError, match="max_partners"):
        PartnerLimits(max_partners=-1).check()
    with pytest.raises(RuntimeConfigError, match="max_bytes_per_frame"):
        FusionEngine(tiny_model, limits=PartnerLimits(max_bytes_per_frame=-1))


def test_the_index_tuples_may_be_wider_than_one_number() -> None:
    """K^Q past int64 (4096 codewords, 8 stages): the keys are relabelled on the way."""
    rng = np.random.default_rng(0)
    background = rng.integers(0, 4096, 8)
    indices = np.broadcast_to(background[:, None, None], (8, *GRID.bev_shape)).copy()
    objects = rng.random(GRID.bev_shape) < 0.3
    indices[:, objects] = rng.integers(0, 4096, (8, int(objects.sum())))
    wide = replace(EGO, indices=indices)
    np.testing.assert_array_equal(EmptyCells(GRID, EMPTY.classes, 1, 4096).occupied([wide])[0], objects)


def test_the_bundled_model_s_empty_cells_are_the_cells_far_from_points() -> None:
    """The trained model (an untrained one does not tell cells apart): every cell with points is
    occupied, none farther than the encoder's reach (2 cells on the real maps, docs/RESULTS.md)
    but, at times, a corner of the map (in the empty sweep one shares an edge's indices)."""
    model = load_runtime_model(package_share_directory("revqom") / BUNDLED_MODEL, "cpu")
    empty_cells = EmptyCells.of(model)
    assert empty_cells.num_classes > 1  # the border of its map encodes apart from the interior
    grid = model.grid
    cloud = crop_to_grid(raycast_cloud(np.random.default_rng(0), 20000, 1.9, max_range_m=50.0), grid)
    with torch.no_grad():
        indices = model.detector.encode_agent(torch.from_numpy(cloud))[0].numpy()
    occupied = empty_cells.occupied([replace(EGO, indices=indices)])[0]
    points = np.zeros(grid.bev_shape, bool)
    points[grid.cell_of(cloud[:, 0], cloud[:, 1])] = True
    assert occupied[points].all()
    near = torch.nn.functional.max_pool2d(torch.from_numpy(points).float()[None], 7, 1, 3)[0].numpy() > 0
    corners = np.zeros_like(points)
    corners[::grid.bev_shape[0] - 1, ::grid.bev_shape[1] - 1] = True
    assert not occupied[~near & ~corners].any() and (~near).sum() > 1000


def test_the_engine_fuses_what_the_selection_takes(tiny_model, make_frame) -> None:
    expect = Expectations.of(tiny_model)
    ego = check_frame(make_frame("vehicle", 1000, T_WORLD_FROM_VEHICLE), expect)
    near = check_frame(make_frame("infrastructure", 1000, T_WORLD_FROM_INFRA), expect)
    T_far = T_WORLD_FROM_INFRA.copy()
    T_far[0, 3] += 20.0
    far = check_frame(make_frame("vehicle_1", 1000, T_far), expect)
    limits = PartnerLimits(max_partners=1)
    chosen = select_partners(ego, [far, near], comm_range_m=tiny_model.comm_range_m, limits=limits,
                             empty_cells=EmptyCells.of(tiny_model))
    (taken,) = chosen.fused
    limited = FusionEngine(tiny_model, limits=limits).fuse(ego, [far, near])
    assert limited.fused_agent_ids == ["vehicle", taken.agent_id]
    assert limited.not_fused == chosen.not_fused and limited.out_of_range == 0
    alone = FusionEngine(tiny_model).fuse(ego, [taken])
    np.testing.assert_array_equal(limited.detections.boxes, alone.detections.boxes)
    everyone = FusionEngine(tiny_model).fuse(ego, [far, near])
    assert everyone.fused_agent_ids == ["vehicle", "vehicle_1", "infrastructure"]
    assert everyone.not_fused == (None, None)
    assert FusionEngine(tiny_model).empty_cells is None  # no limits: no empty sweep encoded
    T_ego_from_far = invert(T_WORLD_FROM_VEHICLE) @ T_far
    assert np.hypot(*T_ego_from_far[:2, 3]) < tiny_model.comm_range_m
