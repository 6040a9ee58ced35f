"""A fusion node enforcing signed slices, over real DDS, against an attacker on the
infrastructure topic.

A child process floods the infrastructure topic with unsigned phantom slices stamped with the
wall clock; the test process sends signed ego and infrastructure frames and, before each,
forged (another CA's key), tampered (one flipped bit) and duplicated slices. Every legit frame
must be fused with the infrastructure and give exactly the unsigned pipeline's detections;
every attack is counted by its reason.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]

FRAMES = 8


def test_forged_and_unsigned_slices_change_nothing(tmp_path: Path, ros_env: dict[str, str]) -> None:
    rclpy = pytest.importorskip("rclpy")
    from rclpy.node import Node
    from rclpy.serialization import serialize_message
    from revqom.msg import Detection3DArray, FusionStatus

    from revqom_nodes.codec.wire import Encoding
    from revqom_nodes.ros.conversions import msg_to_boxes, slice_to_encoded_bev
    from revqom_nodes.ros.qos import ENCODED_BEV_QOS
    from revqom_nodes.runtime.encoder import AgentEncoder
    from revqom_nodes.runtime.fusion import FusionEngine
    from revqom_nodes.runtime.security import load_signer, sign_slice
    from revqom_nodes.runtime.validation import Expectations, check_frame
    from tests.ros.fusion_process import (
        listen,
        spin_for,
        start_fusion_node,
        start_publisher,
        stop,
        wait_until_up,
    )
    from tests.ros.test_fusion_node import _poses
    from tests.runtime.tiny_model import save_tiny_model, tiny_cloud
    from tests.trust.conftest import make_keys

    model_path = tmp_path / "tiny.pt"
    model = save_tiny_model(model_path)
    keys = make_keys(tmp_path / "keys").root
    forger = load_signer(make_keys(tmp_path / "other").root, agent_id="infrastructure", role=1)
    signers = {
        "vehicle": load_signer(keys, agent_id="vehicle", role=0),
        "infrastructure": load_signer(keys, agent_id="infrastructure", role=1),
    }
    T_vehicle, T_infra = _poses()
    ego_encoder, infra_encoder = AgentEncoder(model), AgentEncoder(model, Encoding.ENTROPY)
    ego_sweep, infra_sweep = (
        ego_encoder.encode(tiny_cloud(1)),
        infra_encoder.encode(tiny_cloud(2, height_m=6.0)),
    )

    def frame(agent_id: str, stamp_ns: int, sequence: int):
        encoder, sweep, T = (
            (ego_encoder, ego_sweep, T_vehicle)
            if agent_id == "vehicle"
            else (infra_encoder, infra_sweep, T_infra)
        )
        (message,) = encoder.messages(
            sweep.slices,
            agent_id=agent_id,
            role=int(agent_id != "vehicle"),
            stamp_ns=stamp_ns,
            sequence=sequence,
            frame_id=f"{agent_id}_lidar",
            T_world_from_lidar=T,
        )
        return message

    # The unsigned pipeline's detections: what every legit frame must give.
    expect = Expectations.of(model)
    reference = (
        FusionEngine(model)
        .fuse(
            check_frame(frame("vehicle", 0, 0), expect), [check_frame(frame("infrastructure", 0, 0), expect)]
        )
        .detections
    )
    # The flood: the ego's map as a phantom infrastructure map, unsigned, fresh stamps.
    (phantom,) = ego_encoder.messages(
        ego_sweep.slices,
        agent_id="infrastructure",
        role=1,
        frame_id="infrastructure_lidar",
        T_world_from_lidar=T_vehicle,
    )
    (tmp_path / "phantom.cdr").write_bytes(serialize_message(slice_to_encoded_bev(phantom)))

    log_path = tmp_path / "fusion.log"
    fusion = start_fusion_node(model_path, log_path, ros_env, f"security.trust_dir:={keys}")
    attacker = start_publisher(tmp_path / "phantom.cdr", "/infrastructure/encoded_bev", 0.02, ros_env)
    detections: dict[int, Detection3DArray] = {}
    statuses: list[FusionStatus] = []
    sent: list[int] = []
    rclpy.init()
    try:
        node = Node("signed_test")
        ego_pub = node.create_publisher(
            type(slice_to_encoded_bev(phantom)), "/vehicle/encoded_bev", ENCODED_BEV_QOS
        )
        infra_pub = node.create_publisher(
            type(slice_to_encoded_bev(phantom)), "/infrastructure/encoded_bev", ENCODED_BEV_QOS
        )
        listen(node, detections, statuses)

        wait_until_up(rclpy, node, fusion, log_path)
        for k in range(1, FRAMES + 1):
            stamp = time.time_ns()
            legit = sign_slice(frame("infrastructure", stamp, k), signers["infrastructure"])
            flipped = bytearray(legit.payload)
            flipped[0] ^= 0x01
            ego = frame("vehicle", stamp, k)
            attacks = [
                sign_slice(
                    replace(
                        ego,
                        agent_id="infrastructure",
                        role=1,
                        frame_id="infrastructure_lidar",
                    ),
                    forger,
                ),  # another CA's key
                replace(legit, payload=bytes(flipped)),  # one bit flipped
                replace(
                    frame("infrastructure", stamp + 950_000_000, k),
                    position=ego.position,
                    orientation=ego.orientation,
                ),  # unsigned
            ]
            for attack in attacks:
                infra_pub.publish(slice_to_encoded_bev(attack))
            infra_pub.publish(slice_to_encoded_bev(legit))
            infra_pub.publish(slice_to_encoded_bev(legit))  # a replay: the same slice again
            ego_pub.publish(slice_to_encoded_bev(sign_slice(ego, signers["vehicle"])))
            sent.append(stamp)
            spin_for(rclpy, node, 0.5)
        spin_for(rclpy, node, 1.5)
        node.destroy_node()
    finally:
        rclpy.try_shutdown()
        attacker.kill()
        attacker.wait(timeout=10)
        code = stop(fusion)
    output = log_path.read_text()
    assert code == 0, output[-3000:]
    assert "security enforce" in output

    assert sorted(detections) == sent, "a legit frame got no detections"
    for stamp in sent:
        assert list(detections[stamp].fused_agent_ids) == ["vehicle", "infrastructure"]
        boxes, scores = msg_to_boxes(detections[stamp])
        np.testing.assert_allclose(boxes, reference.boxes, atol=1e-3)
        np.testing.assert_allclose(scores, reference.scores, atol=1e-4)
    counts = dict(zip(statuses[-1].rejected_reasons, statuses[-1].rejected_counts, strict=True))
    assert counts["unknown_signer"] >= FRAMES - 1 and counts["bad_signature"] >= FRAMES - 1, counts
    assert counts["replayed"] >= FRAMES - 1, counts
    assert counts["unsigned"] >= 2 * FRAMES, counts  # the flood and the +0.95 s stamps
    assert counts["out_of_order"] == counts["stale"] == counts["bad_slice"] == 0, counts
