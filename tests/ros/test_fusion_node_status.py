"""The fusion node, in process: its partner limits go to the engine, and FusionStatus says which
partners were fused and why each other one was not."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.ros

rclpy = pytest.importorskip("rclpy")

from rclpy.parameter import Parameter  # noqa: E402

from revqom_nodes.codec.wire import Encoding  # noqa: E402
from revqom_nodes.runtime.encoder import AgentEncoder  # noqa: E402
from revqom_nodes.runtime.fusion import FusionEngine  # noqa: E402
from revqom_nodes.runtime.validation import Expectations, check_frame  # noqa: E402
from tests.runtime.test_fusion_engine import T_WORLD_FROM_INFRA, T_WORLD_FROM_VEHICLE  # noqa: E402
from tests.runtime.tiny_model import save_tiny_model, tiny_cloud  # noqa: E402

MS = 1_000_000
AGENTS = ["vehicle", "infrastructure", "vehicle_1", "infrastructure_1", "vehicle_2", "vehicle_3"]


def _shifted(dx_m: float) -> np.ndarray:
    T = T_WORLD_FROM_INFRA.copy()
    T[0, 3] += dx_m
    return T


def test_fusion_status_says_which_partners_were_fused_and_why_not(tmp_path: Path, ros_env) -> None:
    from revqom_nodes.ros.fusion_node import FusionNode

    model = save_tiny_model(tmp_path / "tiny.pt")
    encoder = AgentEncoder(model, Encoding.PACKED)
    sweep = encoder.encode(tiny_cloud(2, height_m=6.0))

    def message(agent_id: str, stamp_ms: int, T: np.ndarray):
        (one,) = encoder.messages(sweep.slices, agent_id=agent_id, T_world_from_lidar=T,
                                  stamp_ns=stamp_ms * MS, sequence=stamp_ms, frame_id=f"{agent_id}_lidar")
        return one

    sent = [
        message("vehicle_3", 0, _shifted(2.0)),  # 1 s before the ego sweep: stale
        message("infrastructure", 1000, T_WORLD_FROM_INFRA),  # about 8 m away: the nearest
        message("vehicle_1", 1000, _shifted(20.0)),  # farther: over fusion.max_partners
        message("infrastructure_1", 1000, _shifted(1e6)),  # out of the comm range
        # vehicle_2 sends nothing
    ]
    ego = message("vehicle", 1000, T_WORLD_FROM_VEHICLE)
    expect = Expectations.of(model)
    expected = FusionEngine(model).fuse(check_frame(ego, expect), [check_frame(sent[1], expect)]).detections

    rclpy.init()
    try:
        node = FusionNode(parameter_overrides=[
            Parameter("model.path", value=str(tmp_path / "tiny.pt")),
            Parameter("device", value="cpu"),
            Parameter("fusion.agent_ids", value=AGENTS),
            Parameter("fusion.agent_topics", value=[f"/{a}/encoded_bev" for a in AGENTS]),
            Parameter("fusion.sync_wait_ms", value=50.0),
            Parameter("fusion.max_partners", value=1),
        ])
        statuses, detections = [], []
        node.status_pub.publish = statuses.append
        node.detections_pub.publish = detections.append
        for one in [*sent, ego]:
            node.inbox.receive(one)
        node.worker.wake()
        deadline = time.monotonic() + 20.0
        while not statuses:
            assert time.monotonic() < deadline, "no FusionStatus"
            time.sleep(0.01)
        node.destroy_node()
    finally:
        rclpy.try_shutdown()

    (status,) = statuses
    assert list(status.agent_ids) == AGENTS
    assert list(status.fused) == [True, True, False, False, False, False]
    assert list(status.not_fused_reason) == ["", "", "max_partners", "out_of_range", "no_message", "stale"]
    assert list(status.message_age_ms[:4]) == [0.0] * 4 and all(map(math.isnan, status.message_age_ms[4:]))
    assert dict(zip(status.rejected_reasons, status.rejected_counts, strict=True))["out_of_range"] == 1
    assert list(detections[0].fused_agent_ids) == ["vehicle", "infrastructure"]
    assert len(detections[0].detections) == len(expected.scores)
