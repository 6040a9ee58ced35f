"""A fusion node under a flood of forged slices on the infrastructure topic, over real DDS.

The flooder (``revqom_nodes.scenario.flood``'s child process) copies the legit infrastructure
certificate's digest, so only the signature refuses its slices; the test process sends signed
ego and infrastructure frames, each map in several slices. Every legit frame must still be
fused with the whole infrastructure map, the forged slices counted as rejected, and no more of
them verified than ``fusion.intake_new_sweep_slices_per_s`` allows.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]

FRAMES = 8
FLOOD_RATE = 300  # forged slices per second: modest, for a shared test machine
SLICE_BYTES = 64  # several slices per map: a frame is fused whole only if none was pushed out


def test_legit_frames_fuse_whole_under_a_flood(tmp_path: Path, ros_env: dict[str, str]) -> None:
    rclpy = pytest.importorskip("rclpy")
    from rclpy.node import Node
    from rclpy.serialization import serialize_message
    from revqom.msg import Detection3DArray, EncodedBEV, FusionStatus

    from revqom_nodes.defaults import node_defaults
    from revqom_nodes.ros.conversions import slice_to_encoded_bev
    from revqom_nodes.ros.qos import ENCODED_BEV_QOS
    from revqom_nodes.runtime.encoder import AgentEncoder
    from revqom_nodes.runtime.security import load_signer
    from tests.ros.fusion_process import listen, spin_for, start_fusion_node, stop, wait_until_up
    from tests.ros.test_fusion_node import _poses
    from tests.runtime.tiny_model import save_tiny_model, tiny_cloud
    from tests.trust.conftest import make_keys

    model_path = tmp_path / "tiny.pt"
    model = save_tiny_model(model_path)
    keys = make_keys(tmp_path / "keys").root
    encoder = AgentEncoder(model, slice_bytes=SLICE_BYTES)
    poses = dict(zip(("vehicle", "infrastructure"), _poses(), strict=True))
    sweeps = {"vehicle": encoder.encode(tiny_cloud(1)), "infrastructure": encoder.encode(tiny_cloud(2))}

    def frame(agent_id: str, stamp_ns: int, sequence: int) -> list:
        return encoder.messages(
            sweeps[agent_id].slices,
            agent_id=agent_id,
            role=int(agent_id != "vehicle"),
            stamp_ns=stamp_ns,
            sequence=sequence,
            frame_id=f"{agent_id}_lidar",
            T_world_from_lidar=poses[agent_id],
            signer=load_signer(keys, agent_id=agent_id, role=int(agent_id != "vehicle")),
        )

    num_slices = len(sweeps["infrastructure"].slices)
    assert num_slices > 3
    forged = replace(frame("infrastructure", time.time_ns(), 0)[0], signature=bytes(64))
    (tmp_path / "forged.cdr").write_bytes(serialize_message(slice_to_encoded_bev(forged)))

    log_path = tmp_path / "fusion.log"
    fusion = start_fusion_node(model_path, log_path, ros_env, f"security.trust_dir:={keys}")
    flood_start_s = time.monotonic()
    flood_arguments = ["flood", str(tmp_path / "forged.cdr"), str(FLOOD_RATE), "600"]
    flooder = subprocess.Popen(
        [sys.executable, "-m", "revqom_nodes.scenario.flood", *flood_arguments],
        env=ros_env,
        stdout=subprocess.DEVNULL,
    )
    detections: dict[int, Detection3DArray] = {}
    statuses: list[FusionStatus] = []
    sent: list[int] = []
    rclpy.init()
    try:
        node = Node("flood_test")
        publishers = {
            agent_id: node.create_publisher(EncodedBEV, f"/{agent_id}/encoded_bev", ENCODED_BEV_QOS)
            for agent_id in ("vehicle", "infrastructure")
        }
        listen(node, detections, statuses)
        wait_until_up(rclpy, node, fusion, log_path)
        while node.count_publishers("/infrastructure/encoded_bev") < 2:  # the flooder is on
            assert flooder.poll() is None
            spin_for(rclpy, node, 0.1)
        spin_for(rclpy, node, 1.0)
        for k in range(1, FRAMES + 1):
            stamp = time.time_ns()
            for agent_id in ("infrastructure", "vehicle"):
                for message in frame(agent_id, stamp, k):
                    publishers[agent_id].publish(slice_to_encoded_bev(message))
            sent.append(stamp)
            spin_for(rclpy, node, 0.5)
        spin_for(rclpy, node, 1.5)
        node.destroy_node()
    finally:
        rclpy.try_shutdown()
        flooder.kill()
        flooder.wait(timeout=10)
        flood_s = time.monotonic() - flood_start_s
        code = stop(fusion)
    output = log_path.read_text()
    assert code == 0, output[-3000:]

    by_stamp = {s.header.stamp.sec * 10**9 + s.header.stamp.nanosec: s for s in statuses}
    assert sorted(detections) == sent, "a legit frame got no detections"
    for stamp in sent:
        assert list(detections[stamp].fused_agent_ids) == ["vehicle", "infrastructure"]
        assert list(by_stamp[stamp].cells_received_fraction) == [1.0, 1.0], "a legit slice was lost"
    counts = dict(zip(statuses[-1].rejected_reasons, statuses[-1].rejected_counts, strict=True))
    refused = counts["bad_signature"] + counts["intake_overflow"]
    assert refused >= FLOOD_RATE * FRAMES * 0.5 / 2, counts  # half the flood at least
    budget = node_defaults("fusion")["fusion.intake_new_sweep_slices_per_s"]
    assert counts["bad_signature"] <= budget * (flood_s + 1), counts  # the verifications stayed in the budget
    assert counts["replayed"] == counts["stale"] == counts["bad_slice"] == 0, counts
