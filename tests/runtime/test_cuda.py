"""On CUDA, encoding, decoding and fusion give the CPU's results within float tolerance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from revqom_nodes.codec.wire import Encoding
from revqom_nodes.data.transforms import make_transform, rotation_z
from revqom_nodes.runtime.encoder import AgentEncoder
from revqom_nodes.runtime.fusion import FusionEngine
from revqom_nodes.runtime.model import load_runtime_model
from revqom_nodes.runtime.validation import Expectations, check_frame
from tests.runtime.tiny_model import save_tiny_model

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_cuda_pipeline_matches_cpu(tmp_path, sweeps, make_frame):
    save_tiny_model(tmp_path / "tiny.pt")
    results = {}
    for device in ("cpu", "cuda"):
        model = load_runtime_model(tmp_path / "tiny.pt", device)
        assert model.device.type == device
        expect = Expectations.of(model)
        frames = []
        for agent_id, T in (
            ("vehicle", make_transform(rotation_z(0.3), [2800.0, -1200.0, 1.9])),
            ("infrastructure", make_transform(rotation_z(-1.0), [2806.0, -1196.0, 6.0])),
        ):
            sweep = AgentEncoder(model, Encoding.ENTROPY).encode(sweeps[agent_id])
            frame = make_frame(agent_id, 1000, T, payload=sweep.payload, encoding=int(sweep.encoding))
            frame.indices = check_frame(frame, expect)
            frames.append(frame)
        results[device] = FusionEngine(model).fuse(frames[0], frames[1:]).detections
    np.testing.assert_allclose(results["cuda"].boxes, results["cpu"].boxes, atol=1e-3)
    np.testing.assert_allclose(results["cuda"].scores, results["cpu"].scores, atol=1e-4)
