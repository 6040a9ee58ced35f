"""The runtime path (encode -> wire -> validate -> fuse) equals the detector's offline ``detect``."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from revqom_nodes.codec.wire import Encoding, packed_size
from revqom_nodes.geometry import invert, make_transform, rotation_z
from revqom_nodes.runtime.encoder import AgentEncoder, parse_encoding
from revqom_nodes.runtime.errors import RuntimeConfigError
from revqom_nodes.runtime.fusion import FusionEngine
from revqom_nodes.runtime.model import RuntimeModel
from revqom_nodes.runtime.selection import NotFused
from revqom_nodes.runtime.validation import Expectations, check_frame
from tests.runtime.tiny_model import tiny_cloud

T_WORLD_FROM_VEHICLE = make_transform(rotation_z(0.4), [2800.0, -1200.0, 1.9])
T_WORLD_FROM_INFRA = make_transform(rotation_z(-1.1), [2806.0, -1195.0, 6.0])


@pytest.mark.parametrize("encoding", list(Encoding))
def test_live_path_equals_offline_detect(tiny_model, sweeps, make_frame, encoding):
    expect = Expectations.of(tiny_model)
    ego, partner = (
        check_frame(make_frame(agent_id, stamp_ms, T, encode_with=encoding), expect)
        for agent_id, stamp_ms, T in (
            ("vehicle", 1000, T_WORLD_FROM_VEHICLE), ("infrastructure", 1030, T_WORLD_FROM_INFRA)
        )
    )
    result = FusionEngine(tiny_model).fuse(ego, [partner])

    T_ego_from_world = invert(T_WORLD_FROM_VEHICLE)
    offline = tiny_model.detector.detect(
        [sweeps["vehicle"], sweeps["infrastructure"]], [np.eye(4), T_ego_from_world @ T_WORLD_FROM_INFRA]
    )
    assert result.fused_agent_ids == ["vehicle", "infrastructure"]
    assert len(offline.scores) > 0
    np.testing.assert_allclose(result.detections.boxes, offline.boxes, atol=1e-3)
    np.testing.assert_allclose(result.detections.scores, offline.scores, atol=1e-4)
    np.testing.assert_allclose(result.T_ego_from_agent[1], T_ego_from_world @ T_WORLD_FROM_INFRA, atol=1e-9)
    assert min(result.unpack_ms, result.decode_ms, result.fuse_ms, result.nms_ms) > 0
    assert result.decode_fuse_ms == result.unpack_ms + result.decode_ms + result.fuse_ms + result.nms_ms


def test_missing_partner_fuses_the_ego_alone(tiny_model, sweeps, make_frame):
    ego = check_frame(make_frame("vehicle", 1000, T_WORLD_FROM_VEHICLE), Expectations.of(tiny_model))
    result = FusionEngine(tiny_model).fuse(ego, [NotFused.NO_MESSAGE])
    offline = tiny_model.detector.detect([sweeps["vehicle"]], [np.eye(4)])
    assert result.fused_agent_ids == ["vehicle"] and result.not_fused == (NotFused.NO_MESSAGE,)
    np.testing.assert_allclose(result.detections.boxes, offline.boxes, atol=1e-3)


def test_payload_sizes(tiny_model, sweeps):
    height, width = tiny_model.grid.bev_shape
    settings = tiny_model.settings
    packed = AgentEncoder(tiny_model, Encoding.PACKED).encode(sweeps["vehicle"])
    entropy = AgentEncoder(tiny_model, Encoding.ENTROPY).encode(sweeps["vehicle"])
    assert len(packed.slices) == len(entropy.slices) == 1
    assert packed.payload_bytes == packed_size(height, width, settings.num_quantizers, settings.codebook_size)
    assert entropy.payload_bytes <= packed.payload_bytes
    np.testing.assert_array_equal(entropy.indices, packed.indices)
    assert min(packed.bev_ms, packed.quantize_ms, packed.pack_ms) >= 0 and packed.encode_ms > 0
    sliced = AgentEncoder(tiny_model, Encoding.ENTROPY, slice_bytes=20).encode(sweeps["vehicle"])
    assert len(sliced.slices) > 1 and all(len(s.payload) <= 20 for s in sliced.slices)
    assert sum(s.num_cells for s in sliced.slices) == height * width


def test_entropy_codes_with_the_context_model_when_the_file_has_its_tables(tiny_model, sweeps):
    assert AgentEncoder(tiny_model, Encoding.ENTROPY).encoding is Encoding.CONTEXT
    static = RuntimeModel(tiny_model.detector, tiny_model.codec_state.with_context_tables(None), "static")
    assert static.context_tables is None and static.codebook_id != tiny_model.codebook_id
    sweep = AgentEncoder(static, Encoding.ENTROPY).encode(sweeps["vehicle"])
    assert sweep.slices[0].encoding is Encoding.ENTROPY
    with pytest.raises(RuntimeConfigError, match="context tables"):
        AgentEncoder(static, Encoding.CONTEXT)


def test_slice_bytes_must_not_be_negative_nor_the_interleave_outside_the_grid(tiny_model):
    with pytest.raises(RuntimeConfigError, match="slice_bytes"):
        AgentEncoder(tiny_model, slice_bytes=-1)
    for interleave in (0, 33):  # the tiny grid is 32 x 32
        with pytest.raises(RuntimeConfigError, match="interleave"):
            AgentEncoder(tiny_model, slice_bytes=100, interleave=interleave)
    assert len(AgentEncoder(tiny_model, slice_bytes=1).encode(tiny_cloud(1)).slices) == 32 * 32  # 8-bit cells


def test_encoding_names():
    assert parse_encoding("Entropy") is Encoding.ENTROPY
    with pytest.raises(RuntimeConfigError, match="packed"):
        parse_encoding("zip")


def test_a_late_partner_is_fused_and_its_age_reported(tiny_model, make_frame):
    expect = Expectations.of(tiny_model)
    ego = check_frame(make_frame("vehicle", 1400, T_WORLD_FROM_VEHICLE), expect)
    partner = check_frame(make_frame("infrastructure", 1000, T_WORLD_FROM_INFRA), expect)
    late = FusionEngine(tiny_model).fuse(ego, [partner])
    assert late.fused_agent_ids == ["vehicle", "infrastructure"]
    assert late.ages_ms == (0.0, 400.0)
    on_time = FusionEngine(tiny_model).fuse(ego, [replace(partner, stamp_ns=ego.stamp_ns)])
    np.testing.assert_array_equal(late.detections.boxes, on_time.detections.boxes)



def test_ego_head_detects_the_frames_without_a_partner(tiny_model, sweeps, make_frame):
    """A model with an ego-only head: with a partner, the cooperative head's detections as without
    one; alone, the ego head's (as ``detect`` gives them offline), and the result says so."""
    from revqom_nodes.perception.detector import build_detector

    detector = build_detector(replace(tiny_model.detector.config, ego_head=True), "cpu")
    missing = detector.load_state_dict(tiny_model.detector.state_dict(), strict=False).missing_keys
    assert missing and all(key.startswith("ego_head.") for key in missing)  # a fresh ego head
    headed = FusionEngine(RuntimeModel(detector.eval(), tiny_model.codec_state, "tiny+ego_head"))
    plain = FusionEngine(tiny_model)
    expect = Expectations.of(tiny_model)
    ego = check_frame(make_frame("vehicle", 1000, T_WORLD_FROM_VEHICLE), expect)
    partner = check_frame(make_frame("infrastructure", 1030, T_WORLD_FROM_INFRA), expect)

    both, both_plain = headed.fuse(ego, [partner]), plain.fuse(ego, [partner])
    assert not both.ego_head and not both_plain.ego_head
    np.testing.assert_array_equal(both.detections.boxes, both_plain.detections.boxes)
    np.testing.assert_array_equal(both.detections.scores, both_plain.detections.scores)

    alone, alone_plain = headed.fuse(ego, [NotFused.STALE]), plain.fuse(ego, [NotFused.STALE])
    assert alone.ego_head and not alone_plain.ego_head and alone.fused_agent_ids == ["vehicle"]
    offline = detector.detect([sweeps["vehicle"]], [np.eye(4)])
    np.testing.assert_allclose(alone.detections.scores, offline.scores, atol=1e-4)
    np.testing.assert_allclose(alone.detections.boxes, offline.boxes, atol=1e-3)
    assert alone.detections.scores.shape != alone_plain.detections.scores.shape or not np.allclose(
        alone.detections.scores, alone_plain.detections.scores)


def test_merge_ego_detections_adds_the_ego_heads_boxes_on_the_ego_map_alone(tiny_model, make_frame):
    """``merge_ego_detections``: a frame with partners gets the cooperative detections and the
    ego-only head's on the ego's map alone, merged by one more rotated NMS, and the stage's time;
    a frame without partners, or a model without an ego-only head, is detected as before."""
    from revqom_nodes.perception.detector import build_detector
    from revqom_nodes.perception.postprocess import merge_detections

    detector = build_detector(replace(tiny_model.detector.config, ego_head=True), "cpu")
    detector.load_state_dict(tiny_model.detector.state_dict(), strict=False)
    headed = RuntimeModel(detector.eval(), tiny_model.codec_state, "tiny+ego_head")
    expect = Expectations.of(tiny_model)
    ego = check_frame(make_frame("vehicle", 1000, T_WORLD_FROM_VEHICLE), expect)
    partner = check_frame(make_frame("infrastructure", 1030, T_WORLD_FROM_INFRA), expect)

    both = FusionEngine(headed).fuse(ego, [partner])
    alone = FusionEngine(headed).fuse(ego, [NotFused.STALE])
    merged = FusionEngine(headed, merge_ego_detections=True).fuse(ego, [partner])
    expected = merge_detections([both.detections, alone.detections], [np.eye(4)] * 2, detector.config.head)
    assert len(alone.detections.scores) > 0 and not merged.ego_head
    np.testing.assert_array_equal(merged.detections.boxes, expected.boxes)
    np.testing.assert_array_equal(merged.detections.scores, expected.scores)
    top = max(both.detections.scores.max(initial=0.0), alone.detections.scores.max())
    assert merged.detections.scores.max() == pytest.approx(top)  # the best box of either survives
    assert merged.merge_ms > 0 and both.merge_ms == 0.0
    assert merged.decode_fuse_ms == pytest.approx(
        merged.unpack_ms + merged.decode_ms + merged.fuse_ms + merged.nms_ms + merged.merge_ms)

    still_alone = FusionEngine(headed, merge_ego_detections=True).fuse(ego, [NotFused.STALE])
    assert still_alone.merge_ms == 0.0 and still_alone.ego_head
    np.testing.assert_array_equal(still_alone.detections.boxes, alone.detections.boxes)
    no_head = FusionEngine(tiny_model, merge_ego_detections=True).fuse(ego, [partner])
    plain = FusionEngine(tiny_model).fuse(ego, [partner])
    assert no_head.merge_ms == 0.0
    np.testing.assert_array_equal(no_head.detections.boxes, plain.detections.boxes)
