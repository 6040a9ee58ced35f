"""On CUDA, encoding, decoding and fusion give the CPU's results within float tolerance; decoding
every agent (one uint8 upload), warp, fusion and head queue their work without waiting for it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from revqom_nodes.codec.rvq import gather_codewords
from revqom_nodes.codec.wire import Encoding
from revqom_nodes.geometry import make_transform, rotation_z
from revqom_nodes.perception.warp import warp_to_ego
from revqom_nodes.runtime.encoder import AgentEncoder
from revqom_nodes.runtime.fusion import FusionEngine, relative_poses, stack_indices
from revqom_nodes.runtime.model import load_runtime_model
from revqom_nodes.runtime.validation import Expectations, check_frame
from tests.runtime.tiny_model import save_tiny_model

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_cuda_pipeline_matches_cpu(tmp_path, sweeps, make_frame):
    """Encoding agrees index for index but for rare near-ties; from the same indices, decoding and
    fusion agree to float tolerance. Only the best boxes are compared: an untrained model scores
    many boxes near the threshold, where a 1e-5 score change adds or drops one (seen on an H200)."""
    save_tiny_model(tmp_path / "tiny.pt")
    models = {device: load_runtime_model(tmp_path / "tiny.pt", device) for device in ("cpu", "cuda")}
    assert [m.device.type for m in models.values()] == ["cpu", "cuda"]
    frames = {}
    for device, model in models.items():
        expect = Expectations.of(model)
        frames[device] = []
        for agent_id, T in (
            ("vehicle", make_transform(rotation_z(0.3), [2800.0, -1200.0, 1.9])),
            ("infrastructure", make_transform(rotation_z(-1.0), [2806.0, -1196.0, 6.0])),
        ):
            sweep = AgentEncoder(model, Encoding.ENTROPY).encode(sweeps[agent_id])
            (whole_map,) = sweep.slices
            frame = make_frame(agent_id, 1000, T, payload=whole_map.payload, encoding=int(whole_map.encoding))
            frames[device].append(check_frame(frame, expect))
    for cpu_frame, cuda_frame in zip(frames["cpu"], frames["cuda"], strict=True):
        assert np.mean(cpu_frame.indices == cuda_frame.indices) > 0.99
    results = {device: FusionEngine(model).fuse(frames["cpu"][0], frames["cpu"][1:]).detections
               for device, model in models.items()}
    cpu, cuda = results["cpu"], results["cuda"]
    best = min(5, len(cpu.scores))
    assert best > 0
    np.testing.assert_allclose(cuda.scores[:best], cpu.scores[:best], atol=1e-4)
    # Anchors over empty cells score exactly alike on the CPU; the GPU's rounding orders such ties
    # (and cuts them at max_detections) its own way, seen on an H200: boxes are compared where the
    # CPU's score is unique (test_decode_warp_fuse_head_never_wait_for_the_device compares the
    # head outputs themselves).
    for box, score in zip(cpu.boxes[:best], cpu.scores[:best], strict=True):
        if np.sum(np.abs(cpu.scores - score) <= 1e-4) == 1:
            same = np.abs(cuda.scores - score) <= 1e-4
            assert np.abs(cuda.boxes[same] - box).max(axis=1).min() <= 1e-3


def _frames(tmp_path, sweeps, make_frame):
    """The tiny model on the CPU and on CUDA, and a two-agent frame encoded on the CPU."""
    save_tiny_model(tmp_path / "tiny.pt")
    models = {device: load_runtime_model(tmp_path / "tiny.pt", device) for device in ("cpu", "cuda")}
    expect = Expectations.of(models["cpu"])
    maps = []
    for agent_id, T in (
        ("vehicle", make_transform(rotation_z(0.3), [2800.0, -1200.0, 1.9])),
        ("infrastructure", make_transform(rotation_z(-1.0), [2806.0, -1196.0, 6.0])),
    ):
        sweep = AgentEncoder(models["cpu"], Encoding.ENTROPY).encode(sweeps[agent_id])
        (whole_map,) = sweep.slices
        frame = make_frame(agent_id, 1000, T, payload=whole_map.payload, encoding=int(whole_map.encoding))
        maps.append(check_frame(frame, expect))
    return models, maps


def test_decode_warp_fuse_head_never_wait_for_the_device(tmp_path, sweeps, make_frame):
    """torch.cuda.set_sync_debug_mode("error") raises at any host sync: none in decoding all agents
    (a whole map and one with lost cells), warp, fusion and head; the features match the CPU's."""
    models, maps = _frames(tmp_path, sweeps, make_frame)
    engine = {device: FusionEngine(model) for device, model in models.items()}
    height, width = models["cpu"].grid.bev_shape
    lost = torch.ones(height, width, dtype=torch.bool)
    lost[4:9] = False
    indices = stack_indices(maps, models["cpu"].settings.codebook_size)
    assert indices.dtype == torch.uint8
    poses = relative_poses(maps[0], maps[1:])
    detector = models["cuda"].detector
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        bev, valid = engine["cuda"].receiver.decode_agents(indices, [None, lost])
        warped = warp_to_ego(bev, poses, detector.grid, torch.stack([torch.ones_like(valid[1]), valid[1]]))
        head = detector.head(detector.fusion(warped.features, warped.valid))
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert valid[0] is None and head.class_logits.device.type == "cuda"
    cpu_bev, cpu_valid = engine["cpu"].receiver.decode_agents(indices, [None, lost])
    torch.testing.assert_close(bev.cpu(), cpu_bev, atol=1e-4, rtol=1e-4)
    assert torch.equal(valid[1].cpu(), cpu_valid[1])
    cpu_detector = models["cpu"].detector
    cpu_masks = torch.stack([torch.ones_like(lost), cpu_valid[1]])
    cpu_warped = warp_to_ego(cpu_bev, poses, cpu_detector.grid, cpu_masks)
    cpu_head = cpu_detector.head(cpu_detector.fusion(cpu_warped.features, cpu_warped.valid))
    torch.testing.assert_close(head.class_logits.cpu(), cpu_head.class_logits, atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(head.box_deltas.cpu(), cpu_head.box_deltas, atol=1e-3, rtol=1e-4)


def test_engine_without_stage_timing_gives_the_same_detections(tmp_path, sweeps, make_frame):
    models, maps = _frames(tmp_path, sweeps, make_frame)
    timed = FusionEngine(models["cuda"], stage_timing=True).fuse(maps[0], maps[1:])
    untimed = FusionEngine(models["cuda"]).fuse(maps[0], maps[1:])
    np.testing.assert_allclose(untimed.detections.boxes, timed.detections.boxes, atol=1e-5)
    assert untimed.decode_fuse_ms > 0 and timed.nms_ms > 0


def test_indices_on_the_device_are_clamped_not_checked():
    """A range check of indices already on the device would wait for it: they are clamped there."""
    codebooks = torch.randn(2, 4, 3, device="cuda")
    inside = torch.tensor([[0, 3]], device="cuda").view(1, 2, 1, 1)
    outside = torch.tensor([[-2, 9]], device="cuda").view(1, 2, 1, 1)
    assert torch.equal(gather_codewords(codebooks, outside), gather_codewords(codebooks, inside))
