"""The agent node, in process, fed synthetic messages through its callbacks.

Good sweeps become EncodedBEV messages with the sweep's stamp and pose; a sweep waits for
its pose; bad clouds and sweeps without a pose are counted as failed and the node goes on.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.ros

rclpy = pytest.importorskip("rclpy")

from geometry_msgs.msg import PoseStamped  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from revqom_nodes.codec.wire import packed_size  # noqa: E402
from revqom_nodes.geometry import make_transform, rotation_z  # noqa: E402
from revqom_nodes.ros.conversions import matrix_to_pose, ns_to_stamp, pose_to_matrix, stamp_to_ns  # noqa: E402
from tests.ros.test_conversions import make_cloud  # noqa: E402
from tests.runtime.tiny_model import save_tiny_model, tiny_cloud  # noqa: E402

STAMP_NS = 1_626_155_000_100_000_000
T_WORLD = make_transform(rotation_z(0.4), [2800.0, -1200.0, 1.9])


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("agent") / "tiny.pt"
    save_tiny_model(path)
    return path


@pytest.fixture
def make_node(model_file, ros_env):
    from revqom_nodes.ros.agent_node import AgentNode

    nodes = []
    rclpy.init()

    def make(**parameters: object) -> AgentNode:
        overrides = [Parameter("model.path", value=str(model_file)), Parameter("device", value="cpu")]
        overrides += [Parameter(name.replace("__", "."), value=value) for name, value in parameters.items()]
        node = AgentNode(parameter_overrides=overrides)
        published = []
        node.encoded_pub.publish = published.append  # capture what the worker publishes
        node.published = published
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.destroy_node()
    rclpy.try_shutdown()


def wait_for(condition, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_sweep_waits_for_its_pose_then_is_encoded(make_node):
    node = make_node(pose__wait_ms=5000.0, output__slice_bytes=0)  # the whole map in one message
    older = PoseStamped()
    older.header.stamp = ns_to_stamp(STAMP_NS - 100_000_000)
    older.pose = matrix_to_pose(np.eye(4))
    node._on_pose(older)
    node._on_cloud(make_cloud(tiny_cloud(1), STAMP_NS))
    time.sleep(0.3)
    assert node.published == []  # the pose of this very sweep may still come
    exact = PoseStamped()
    exact.header.stamp = ns_to_stamp(STAMP_NS)
    exact.pose = matrix_to_pose(T_WORLD)
    node._on_pose(exact)
    wait_for(lambda: node.published)
    (msg,) = node.published
    assert stamp_to_ns(msg.header.stamp) == STAMP_NS and msg.agent_id == "vehicle" and msg.sequence == 1
    np.testing.assert_allclose(pose_to_matrix(msg.lidar_pose), T_WORLD, atol=1e-9)
    settings = node.model.settings
    assert len(msg.payload) == packed_size(
        *node.model.grid.bev_shape, settings.num_quantizers, settings.codebook_size
    )
    assert (msg.slice_index, msg.num_slices, msg.first_cell, msg.num_cells) == (0, 1, 0, 32 * 32)
    assert (node.frames_encoded, node.frames_failed) == (1, 0)


def test_a_sweep_is_published_as_back_to_back_slices(make_node):
    node = make_node(pose__static=[float(v) for v in T_WORLD.reshape(-1)], output__slice_bytes=100)
    statuses = []
    node.status_pub.publish = statuses.append
    node._on_cloud(make_cloud(tiny_cloud(1), STAMP_NS))
    wait_for(lambda: statuses)
    messages = node.published
    height, width = node.model.grid.bev_shape
    assert len(messages) == -(-height * width // 100)  # PACKED: 100 one-byte cells per slice
    assert [m.slice_index for m in messages] == list(range(len(messages)))
    assert {m.num_slices for m in messages} == {len(messages)} and {m.sequence for m in messages} == {1}
    assert all(len(m.payload) <= 100 for m in messages)
    assert [m.first_cell for m in messages] == [100 * i for i in range(len(messages))]
    assert sum(m.num_cells for m in messages) == height * width
    assert all(stamp_to_ns(m.header.stamp) == STAMP_NS for m in messages)
    for m in messages:
        np.testing.assert_allclose(pose_to_matrix(m.lidar_pose), T_WORLD, atol=1e-9)
    assert statuses[0].payload_bytes == sum(len(m.payload) for m in messages)


def test_bad_clouds_and_missing_poses_are_counted_and_skipped(make_node):
    node = make_node(
        pose__static=[float(v) for v in T_WORLD.reshape(-1)],
        agent__id="infrastructure",
        agent__role="infrastructure",
        codec__encoding="entropy",
    )
    truncated = make_cloud(tiny_cloud(2), STAMP_NS)
    truncated.data = bytes(truncated.data)[:100]
    node._on_cloud(truncated)
    node._on_cloud(make_cloud(tiny_cloud(2), STAMP_NS + 100_000_000))
    wait_for(lambda: node.frames_encoded + node.frames_failed == 2)
    assert (node.frames_encoded, node.frames_failed) == (1, 1)
    assert node.published[0].agent_id == "infrastructure" and node.published[0].role == 1
    np.testing.assert_allclose(pose_to_matrix(node.published[0].lidar_pose), T_WORLD, atol=1e-9)

    without_pose = make_node(pose__wait_ms=10.0)
    without_pose._on_cloud(make_cloud(tiny_cloud(1), STAMP_NS))
    wait_for(lambda: without_pose.frames_failed == 1)
    assert without_pose.published == []


def test_configuration_errors_are_clear(make_node):
    from revqom_nodes.runtime.errors import RuntimeConfigError

    with pytest.raises(RuntimeConfigError, match=r"agent\.role"):
        make_node(agent__role="drone")
    with pytest.raises(RuntimeConfigError, match=r"pose\.static"):
        make_node(pose__static=[1.0, 2.0])
    with pytest.raises(RuntimeConfigError, match="encoding"):
        make_node(codec__encoding="zip")
    with pytest.raises(RuntimeConfigError, match="slice_bytes"):
        make_node(output__slice_bytes=-5)


def test_with_a_trust_dir_every_slice_is_signed(make_node, tmp_path):
    from revqom_nodes.ros.conversions import encoded_bev_to_slice
    from revqom_nodes.runtime.errors import RuntimeConfigError
    from revqom_nodes.runtime.frames import signed_fields
    from revqom_nodes.trust import Authenticator, Verifier, load_trust_store
    from tests.trust.conftest import make_keys

    keys = make_keys(tmp_path / "keys").root
    node = make_node(pose__static=[float(v) for v in T_WORLD.reshape(-1)], output__slice_bytes=100,
                     security__trust_dir=str(keys))
    node._on_cloud(make_cloud(tiny_cloud(1), STAMP_NS))
    wait_for(lambda: node.frames_encoded == 1)
    verifier = Verifier(load_trust_store(keys))
    for msg in node.published:
        received = encoded_bev_to_slice(msg)
        authenticator = Authenticator(received.signer_digest, received.signature)
        assert verifier.verify(signed_fields(received), authenticator).accepted
    with pytest.raises(RuntimeConfigError, match="not for role"):
        make_node(agent__role="infrastructure", security__trust_dir=str(keys))  # the vehicle's certificate
