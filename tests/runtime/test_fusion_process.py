"""``FusionProcess``: the fusion node's engine in a child process gives the in-process engine's
results bit for bit, passes a frame's exception back, and survives its child's death."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from revqom_nodes.codec.wire import Encoding
from revqom_nodes.geometry import make_transform, rotation_z
from revqom_nodes.runtime.errors import RuntimeConfigError
from revqom_nodes.runtime.fusion import FusionEngine
from revqom_nodes.runtime.fusion_process import FusionProcess, FusionProcessError
from revqom_nodes.runtime.model import load_runtime_model
from revqom_nodes.runtime.selection import NotFused
from revqom_nodes.runtime.validation import Expectations, check_frame
from tests.runtime.tiny_model import save_tiny_model

T_WORLD_FROM_VEHICLE = make_transform(rotation_z(0.4), [2800.0, -1200.0, 1.9])
T_WORLD_FROM_INFRA = make_transform(rotation_z(-1.1), [2806.0, -1195.0, 6.0])


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fusion_process") / "tiny.pt"
    save_tiny_model(path)
    return path


@pytest.fixture(scope="module")
def process(model_path: Path):
    # this process's thread count: convolutions on other counts may round differently
    fusion = FusionProcess(str(model_path), device="cpu", num_threads=torch.get_num_threads())
    yield fusion
    fusion.close()


def _frames(model_path: Path, make_frame):
    expect = Expectations.of(load_runtime_model(model_path, "cpu"))
    return [
        check_frame(make_frame(agent_id, stamp_ms, T, encode_with=Encoding.ENTROPY), expect)
        for agent_id, stamp_ms, T in (
            ("vehicle", 1000, T_WORLD_FROM_VEHICLE), ("infrastructure", 1030, T_WORLD_FROM_INFRA)
        )
    ]


def test_results_equal_the_engine_in_this_process(process, model_path, make_frame):
    ego, partner = _frames(model_path, make_frame)
    engine = FusionEngine(load_runtime_model(model_path, "cpu"))
    for partners in ([partner], [NotFused.NO_MESSAGE]):
        here, there = engine.fuse(ego, partners), process.fuse(ego, partners)
        assert there.fused_agent_ids == here.fused_agent_ids and there.not_fused == here.not_fused
        assert len(here.detections.scores) > 0
        np.testing.assert_array_equal(there.detections.boxes, here.detections.boxes)
        np.testing.assert_array_equal(there.detections.scores, here.detections.scores)
        np.testing.assert_array_equal(there.T_ego_from_agent, here.T_ego_from_agent)
        assert here.transfer_ms == 0.0 and there.transfer_ms > 0
        assert there.decode_fuse_ms == pytest.approx(
            there.unpack_ms + there.decode_ms + there.fuse_ms + there.nms_ms + there.transfer_ms)


def test_a_failing_frame_raises_its_exception_and_the_next_fuses(process, model_path, make_frame):
    ego, partner = _frames(model_path, make_frame)
    with pytest.raises(Exception) as raised:
        process.fuse(ego, ["not a map"])
    assert not isinstance(raised.value, FusionProcessError)
    assert process.fuse(ego, [partner]).fused_agent_ids == ["vehicle", "infrastructure"]


def test_a_dead_child_is_started_again(process, model_path, make_frame):
    ego, partner = _frames(model_path, make_frame)
    first = process.pid
    os.kill(first, signal.SIGKILL)
    with pytest.raises(FusionProcessError, match="started again"):
        process.fuse(ego, [partner])
    assert process.pid != first
    assert process.fuse(ego, [partner]).fused_agent_ids == ["vehicle", "infrastructure"]


def test_an_unloadable_model_is_a_configuration_error(tmp_path):
    bad = tmp_path / "not_a_model.pt"
    bad.write_bytes(b"not a model file")
    fusion = FusionProcess(str(bad), device="cpu")
    with pytest.raises(RuntimeConfigError, match="could not load the model"):
        fusion.wait_ready()


def test_a_closed_process_is_not_started_again(model_path, make_frame):
    ego, partner = _frames(model_path, make_frame)
    fusion = FusionProcess(str(model_path), device="cpu")
    fusion.wait_ready()
    child = fusion.pid
    fusion.close()
    with pytest.raises(FusionProcessError, match="closed"):
        fusion.fuse(ego, [partner])
    assert fusion.pid == child  # no new child
