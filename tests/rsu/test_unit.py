"""The roadside unit without ROS: its import graph, its settings, its sources, and a run that a
plain Cyclone DDS reader receives."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from revqom_nodes.rsu.config import AGENT_PARAMETERS, parse_overrides, resolve, unit_defaults
from revqom_nodes.runtime.errors import RuntimeConfigError

ROOT = Path(__file__).resolve().parents[2]
FRAMES = 3


def test_nothing_in_its_import_graph_is_ros() -> None:
    code = (
        "import sys; from tests.rsu.no_ros import block_ros; block_ros()\n"
        "import revqom_nodes.cli, revqom_nodes.rsu.unit, revqom_nodes.rsu.cli\n"
        "revqom_nodes.cli.build_parser()\n"
        "assert 'rclpy' not in sys.modules and 'revqom_nodes.ros' not in sys.modules, sorted(sys.modules)\n"
        "try:\n    import rclpy\nexcept ImportError:\n    print('blocked')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "blocked"


def test_settings_come_from_the_agent_parameters_and_rsu_yaml(tmp_path: Path) -> None:
    from revqom_nodes.defaults import node_defaults

    defaults = unit_defaults()
    agent = node_defaults("agent")
    assert {name: defaults[name] for name in AGENT_PARAMETERS if not name.startswith("agent.")} == {
        name: agent[name] for name in AGENT_PARAMETERS if not name.startswith("agent.")
    }
    assert (defaults["agent.id"], defaults["agent.role"]) == ("infrastructure", "infrastructure")
    config = tmp_path / "rsu.yaml"
    config.write_text(yaml.safe_dump({"model.path": "m.pt", "source.bag": "bag", "source.rate": 2}))
    settings = resolve(config, parse_overrides(["source.clock=ros", "output.slice_bytes=0"]))
    assert settings["source.rate"] == 2.0 and settings["source.clock"] == "ros"
    assert settings["output.slice_bytes"] == 0 and settings["output.interleave"] == agent["output.interleave"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["pose.wait_ms=5"], "does not use"),
        (["source.speed=2"], "unknown setting 'source.speed'"),
        (["source.rate=fast"], "source.rate must be a float"),
        (["source.data=root"], "exactly one of source.data"),
        (["source.clock=gps"], "source.clock must be one of"),
        (["source.rate"], "name=value"),
    ],
)
def test_bad_settings_are_clear_errors(overrides: list[str], message: str) -> None:
    with pytest.raises(RuntimeConfigError, match=message):
        resolve(None, {"model.path": "m.pt", "source.bag": "bag", **parse_overrides(overrides)})


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from revqom_nodes.data.bag import convert_to_bag
    from revqom_nodes.data.synthetic import SynthConfig, generate_dataset
    from revqom_nodes.scenario.keys import scenario_keys
    from tests.runtime.tiny_model import save_tiny_model

    base = tmp_path_factory.mktemp("rsu")
    save_tiny_model(base / "tiny.pt")
    config = SynthConfig(vehicle_beams=16, infrastructure_rings=40)
    generate_dataset(base / "dataset", FRAMES, 11, scenes=1, progress=False, config=config)
    convert_to_bag(base / "dataset", base / "bag", progress=False)
    return {"model": base / "tiny.pt", "dataset": base / "dataset", "bag": base / "bag",
            "keys": scenario_keys(base / "keys")}


def test_the_bag_and_the_dataset_give_the_same_sweeps(recording) -> None:
    from revqom_nodes.data.dairv2x import DairV2XReader
    from revqom_nodes.rsu.source import bag_sweeps, dataset_sweeps

    from_data = list(dataset_sweeps(recording["dataset"], "all", "infrastructure"))
    from_bag = list(
        bag_sweeps(recording["bag"], "/infrastructure/lidar/points", "/infrastructure/pose", 200.0)
    )
    reader = DairV2XReader(recording["dataset"], "all")
    assert [s.stamp_ns for s in from_data] == [f.agent("infrastructure").timestamp_us * 1000 for f in reader]
    assert len(from_bag) == len(from_data) == FRAMES
    for a, b in zip(from_data, from_bag, strict=True):
        assert a.stamp_ns == b.stamp_ns and a.frame_id == b.frame_id == "infrastructure_lidar"
        np.testing.assert_array_equal(a.points, b.points)
        np.testing.assert_allclose(a.T_world_from_lidar, b.T_world_from_lidar, atol=1e-9)
    with pytest.raises(RuntimeConfigError, match="no agent 'vehicle_3'"):
        next(dataset_sweeps(recording["dataset"], "all", "vehicle_3"))
    with pytest.raises(RuntimeConfigError, match="no topic"):
        next(bag_sweeps(recording["bag"], "/rsu/lidar/points", None, 200.0))


@pytest.mark.slow
def test_a_unit_without_ros_sends_every_sweep_signed(recording, dds_env, tmp_path) -> None:
    """``revqom rsu`` with ROS blocked plays the dataset at 4x on the wall clock; a Cyclone DDS
    reader on rclpy's topic name gets every slice of every sweep, authentic, in order."""
    from cyclonedds.core import Policy, Qos
    from cyclonedds.sub import DataReader
    from cyclonedds.topic import Topic

    from revqom_nodes.rsu import idl
    from revqom_nodes.rsu.dds import domain_id_from_env, participant
    from revqom_nodes.runtime.frames import signed_fields
    from revqom_nodes.trust import Authenticator, Verifier, load_trust_store

    dp, _domain = participant(domain_id_from_env())
    topic = Topic(dp, "rt/infrastructure/encoded_bev", idl.EncodedBEV)
    reader = DataReader(dp, topic, Qos(Policy.Reliability.BestEffort, Policy.History.KeepLast(512)))
    config = tmp_path / "rsu.yaml"
    config.write_text(yaml.safe_dump({
        "model.path": str(recording["model"]), "device": "cpu", "source.data": str(recording["dataset"]),
        "source.rate": 4.0, "output.slice_bytes": 200, "security.trust_dir": str(recording["keys"]),
    }))
    unit = subprocess.Popen(
        [sys.executable, "-m", "tests.rsu.no_ros", "rsu", "--config", str(config)],
        cwd=ROOT, env=dds_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    received = []
    try:
        deadline = time.monotonic() + 240
        while unit.poll() is None and time.monotonic() < deadline:
            received += reader.take(N=512)
            time.sleep(0.02)
        time.sleep(0.5)
        received += reader.take(N=512)
    finally:
        if unit.poll() is None:
            unit.kill()
    output = unit.communicate()[0]
    assert unit.returncode == 0, output[-3000:]
    slices_per_map = -(-32 * 32 // 200)  # the tiny model: 32 x 32 one-byte PACKED cells
    received = _from_one_writer(received)
    assert len(received) == FRAMES * slices_per_map, output[-3000:]
    assert [m.sequence for m in received] == [1 + i // slices_per_map for i in range(len(received))]
    verifier = Verifier(load_trust_store(recording["keys"]))
    for msg in received:
        assert msg.agent_id == "infrastructure" and msg.role == 1
        fields = signed_fields(_received_slice(msg))
        assert verifier.verify(fields, Authenticator(bytes(msg.signer_digest), bytes(msg.signature))).accepted


def _from_one_writer(received: list) -> list:
    """The samples of the writer that sent the most, each (sequence, slice) once: a CI run once
    took 19 samples for the unit's 18 slices, from a source it could not name (this process's
    other Cyclone tests share the domain). Repeats must be byte-identical copies. Samples without
    data are left out: a writer that goes away leaves one (its instance unregistered), which a slow
    run can take after the unit's last slice."""
    from collections import Counter

    received = [m for m in received if m.sample_info.valid_data]
    if not received:
        return received
    (writer, _), = Counter(m.sample_info.publication_handle for m in received).most_common(1)
    first: dict[tuple[int, int], object] = {}
    for msg in (m for m in received if m.sample_info.publication_handle == writer):
        key = (msg.sequence, msg.slice_index)
        if key in first:
            assert bytes(first[key].payload) == bytes(msg.payload), f"slice {key} came twice, different"
            assert bytes(first[key].signature) == bytes(msg.signature), f"slice {key} came twice, different"
        else:
            first[key] = msg
    return list(first.values())


def _received_slice(msg):
    """A Cyclone EncodedBEV -> the runtime's ReceivedSlice, as the fusion node reads the ROS one."""
    from revqom_nodes.rsu.dds import time_to_ns
    from revqom_nodes.runtime.frames import ReceivedSlice

    p, q = msg.lidar_pose.position, msg.lidar_pose.orientation
    return ReceivedSlice(
        agent_id=msg.agent_id, role=msg.role, sequence=msg.sequence, stamp_ns=time_to_ns(msg.header.stamp),
        frame_id=msg.header.frame_id, position=(p.x, p.y, p.z), orientation=(q.x, q.y, q.z, q.w),
        height=msg.height, width=msg.width, cell_size_m=msg.cell_size_m, codebook_size=msg.codebook_size,
        num_quantizers=msg.num_quantizers, codebook_id=msg.codebook_id, encoding=msg.encoding,
        payload=bytes(msg.payload), slice_index=msg.slice_index, num_slices=msg.num_slices,
        first_cell=msg.first_cell, num_cells=msg.num_cells, interleave=msg.interleave,
        signer_digest=bytes(msg.signer_digest), signature=bytes(msg.signature),
    )


def test_a_sweep_that_fails_to_encode_is_counted_and_the_unit_goes_on(recording, dds_env) -> None:
    from revqom_nodes.rsu.source import Sweep
    from revqom_nodes.rsu.unit import RoadsideUnit
    from tests.runtime.tiny_model import tiny_cloud

    settings = resolve(None, {"model.path": str(recording["model"]), "device": "cpu",
                              "source.bag": str(recording["bag"])})
    unit = RoadsideUnit(settings)
    assert unit.topic == "/infrastructure/encoded_bev" and unit.role == 1 and unit.signer is None
    unit.publish(Sweep(1, "infrastructure_lidar", np.zeros((10, 3), np.float32), np.eye(4)))  # no intensity
    unit.publish(Sweep(2, "infrastructure_lidar", tiny_cloud(2), np.eye(4)))
    assert (unit.frames_failed, unit.frames_encoded, unit.sequence) == (1, 1, 1)
    with pytest.raises(RuntimeConfigError, match="not for role"):
        RoadsideUnit({**settings, "agent.role": "vehicle", "security.trust_dir": str(recording["keys"])})
