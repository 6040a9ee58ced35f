"""A running fusion node under bad input and a lost agent, over real DDS.

The test process plays the ego (good EncodedBEV frames) and an attacker (malformed frames on
the infrastructure topic); a child process plays the roadside unit and is killed mid-run.
The node must count and log every rejection reason, keep publishing correct detections,
keep its memory bounded under a flood, and report the lost agent in its status (stale).
"""

from __future__ import annotations

import math
import signal
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]

BAD_KINDS = (
    "truncated",
    "codebook",
    "oversize",
    "nan_pose",
    "encoding",
    "intruder",
    "stale",
    "codec",
    "slice",
)
EXPECTED_REASONS = (
    "bad_slice",
    "malformed_payload",
    "codebook_mismatch",
    "grid_mismatch",
    "bad_pose",
    "unknown_encoding",
    "unknown_agent",
    "stale",
    "codec_mismatch",
)


def _poses() -> tuple[np.ndarray, np.ndarray]:
    from revqom_nodes.geometry import make_transform, rotation_z

    return (
        make_transform(rotation_z(0.3), [2800.0, -1200.0, 1.9]),
        make_transform(rotation_z(-1.2), [2806.0, -1196.0, 6.0]),
    )


def _bad(message, kind: str):
    from rclpy.serialization import deserialize_message, serialize_message
    from revqom.msg import EncodedBEV

    bad = deserialize_message(serialize_message(message), EncodedBEV)
    if kind == "truncated":
        bad.payload = bytes(message.payload)[:-3]
    elif kind == "codebook":
        bad.codebook_id = "0f" * 32
    elif kind == "oversize":
        bad.height = bad.width = 65535
    elif kind == "nan_pose":
        bad.lidar_pose.position.x = math.nan
    elif kind == "encoding":
        bad.encoding = 7
    elif kind == "intruder":
        bad.agent_id = "intruder"
    elif kind == "codec":
        bad.num_quantizers = 5
    elif kind == "slice":
        bad.first_cell = 1  # with num_cells = H * W, the range runs past the map
    return bad


def test_fusion_node_survives_bad_input_and_a_lost_agent(tmp_path: Path, ros_env: dict[str, str]) -> None:
    rclpy = pytest.importorskip("rclpy")
    import psutil
    from rclpy.node import Node
    from rclpy.serialization import serialize_message
    from revqom.msg import Detection3DArray, FusionStatus
    from visualization_msgs.msg import MarkerArray

    from revqom_nodes.codec.wire import Encoding
    from revqom_nodes.ros.conversions import (
        encoded_bev_to_slice,
        msg_to_boxes,
        ns_to_stamp,
        slice_to_encoded_bev,
        stamp_to_ns,
    )
    from revqom_nodes.ros.qos import ENCODED_BEV_QOS, MARKER_QOS
    from revqom_nodes.runtime.encoder import AgentEncoder
    from revqom_nodes.runtime.fusion import FusionEngine
    from revqom_nodes.runtime.validation import Expectations, check_frame
    from tests.ros.fusion_process import (
        listen,
        spin_for,
        start_fusion_node,
        start_publisher,
        stop,
        wait_until_up,
    )
    from tests.runtime.tiny_model import save_tiny_model, tiny_cloud

    model = save_tiny_model(tmp_path / "tiny.pt")
    T_vehicle, T_infra = _poses()
    ego_sweep = AgentEncoder(model, Encoding.PACKED).encode(tiny_cloud(1))
    infra_sweep = AgentEncoder(model, Encoding.ENTROPY).encode(tiny_cloud(2, height_m=6.0))
    (ego_msg,) = map(slice_to_encoded_bev, AgentEncoder(model).messages(
        ego_sweep.slices, agent_id="vehicle", frame_id="vehicle_lidar", T_world_from_lidar=T_vehicle
    ))
    (infra_msg,) = map(slice_to_encoded_bev, AgentEncoder(model, Encoding.ENTROPY).messages(
        infra_sweep.slices, agent_id="infrastructure", role=1, frame_id="infrastructure_lidar",
        T_world_from_lidar=T_infra,
    ))
    expect = Expectations.of(model)
    frames = [check_frame(encoded_bev_to_slice(m), expect) for m in (ego_msg, infra_msg)]
    engine = FusionEngine(model)
    expected = {
        True: engine.fuse(frames[0], [frames[1]]).detections,
        False: engine.fuse(frames[0], []).detections,
    }
    (tmp_path / "infra.cdr").write_bytes(serialize_message(infra_msg))

    log_path = tmp_path / "fusion.log"
    fusion = start_fusion_node(tmp_path / "tiny.pt", log_path, ros_env)
    infra = start_publisher(tmp_path / "infra.cdr", "/infrastructure/encoded_bev", 0.1, ros_env)
    detections: dict[int, Detection3DArray] = {}
    statuses: list[FusionStatus] = []
    rclpy.init()
    try:
        node = Node("fusion_test")
        ego_pub = node.create_publisher(type(ego_msg), "/vehicle/encoded_bev", ENCODED_BEV_QOS)
        attack_pub = node.create_publisher(type(ego_msg), "/infrastructure/encoded_bev", ENCODED_BEV_QOS)
        listen(node, detections, statuses)
        markers: list[MarkerArray] = []  # built only for a subscriber: this one
        node.create_subscription(MarkerArray, "/fusion/markers", markers.append, MARKER_QOS)

        wait_until_up(rclpy, node, fusion, log_path)

        sent: list[int] = []

        def send_ego() -> None:
            stamp = time.time_ns()
            ego_msg.header.stamp = ns_to_stamp(stamp)
            ego_msg.sequence += 1
            ego_pub.publish(ego_msg)
            sent.append(stamp)

        for k in range(2 * len(BAD_KINDS)):  # good ego frames, one malformed message after each
            send_ego()
            spin_for(rclpy, node, 0.05)
            kind = BAD_KINDS[k % len(BAD_KINDS)]
            attack = _bad(infra_msg, kind)
            attack.header.stamp = ns_to_stamp(time.time_ns() - (5 * 10**9 if kind == "stale" else 0))
            attack_pub.publish(attack)
            spin_for(rclpy, node, 0.35)

        process = psutil.Process(fusion.pid)
        rss_before = process.memory_info().rss
        for k in range(400):  # a flood of unknown agents and oversize claims
            attack = _bad(infra_msg, "oversize" if k % 2 else "intruder")
            attack.agent_id = f"intruder{k}" if k % 2 == 0 else attack.agent_id
            attack_pub.publish(attack)
            spin_for(rclpy, node, 0.005)
        spin_for(rclpy, node, 1.0)
        rss_growth_mb = (process.memory_info().rss - rss_before) / 2**20

        infra.send_signal(signal.SIGKILL)  # the roadside unit dies mid-run
        infra.wait(timeout=10)
        lost_from = len(sent)
        for _ in range(6):
            send_ego()
            spin_for(rclpy, node, 0.4)
        spin_for(rclpy, node, 1.0)
        node.destroy_node()
    finally:
        rclpy.try_shutdown()
        if infra.poll() is None:
            infra.kill()
        code = stop(fusion)
    output = log_path.read_text()
    assert code == 0, output[-3000:]

    assert sorted(detections) == sent, "a good ego frame got no detections"
    marker_stamps = {stamp_to_ns(m.markers[0].header.stamp) for m in markers}
    assert markers and marker_stamps <= set(sent), "no markers for the subscriber, or markers of no frame"
    assert not any(s.ego_head for s in statuses)  # the tiny model has no ego-only head
    counts = dict(zip(statuses[-1].rejected_reasons, statuses[-1].rejected_counts, strict=True))
    for reason in EXPECTED_REASONS:
        assert counts[reason] >= 1, (reason, counts)
        assert f"rejected a message on the infrastructure topic: {reason}" in output
    assert counts["unknown_agent"] + counts["grid_mismatch"] > 100  # the flood was counted...
    assert output.count("rejected a message") < 40  # ...and logged rate-limited
    assert rss_growth_mb < 30, f"RSS grew {rss_growth_mb:.1f} MB under the flood"

    by_stamp = {s.header.stamp.sec * 10**9 + s.header.stamp.nanosec: s for s in statuses}
    fused_infra = 0
    for stamp in sent:
        status = by_stamp[stamp]
        with_infra = bool(status.fused[1])
        fused_infra += with_infra
        boxes, scores = msg_to_boxes(detections[stamp])
        reference = expected[with_infra]
        np.testing.assert_allclose(boxes, reference.boxes, atol=1e-3)
        np.testing.assert_allclose(scores, reference.scores, atol=1e-4)
        assert list(detections[stamp].fused_agent_ids) == (
            ["vehicle", "infrastructure"] if with_infra else ["vehicle"]
        )
        assert list(status.cells_received_fraction) == [1.0, 1.0 if with_infra else 0.0]
        assert status.not_fused_reason[0] == "" and (status.not_fused_reason[1] == "") == with_infra
    assert fused_infra >= lost_from // 2  # the roadside unit was fused while it was alive
    for stamp in sent[-3:]:  # and reported missing after it died
        status = by_stamp[stamp]
        assert list(status.agent_ids) == ["vehicle", "infrastructure"]
        assert list(status.fused) == [True, False] and math.isnan(status.message_age_ms[1])
        assert list(status.not_fused_reason) == ["", "stale"]  # its last sweep is held, too old to pair
        assert status.bytes_received[1] > 0
