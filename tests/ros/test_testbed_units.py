"""The test bed's pure parts: loss rule, counters, DDS profile, namespace names, node placement,
the benchmark's metrics, the replay's topic filter; and the namespaces' life cycle (root, nftables
and network namespaces: skipped with the reason elsewhere)."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from revqom_nodes.launcher.file import parse_launch_file
from revqom_nodes.scenario.bench_loss import (
    cell_shares,
    dropped_share,
    received_share,
    run_name,
    wire_per_frame,
)
from revqom_nodes.scenario.testbed import NODE_ENV, TestbedConfig, launch_arguments, place_nodes
from revqom_nodes.scenario.testbed_net import (
    LinkCounters,
    NetworkLink,
    TestbedError,
    dds_profile_xml,
    loss_per_mille,
    loss_rule,
    loss_ruleset,
    namespace_names,
    parse_counters,
    remove_stale_namespaces,
    stale_namespaces,
    unavailable_reason,
)

ROOT = Path(__file__).resolve().parents[2]
BAG_TOPICS = [
    "/vehicle/lidar/points", "/infrastructure/lidar/points", "/vehicle/pose", "/infrastructure/pose",
    "/tf", "/ground_truth/boxes", "/cooperative/frame_info",
]
NS = "{http://www.eprosima.com}"


def test_loss_share_becomes_a_whole_per_mille_threshold() -> None:
    assert [loss_per_mille(x) for x in (0.0, 0.1, 0.3, 1.0)] == [0, 100, 300, 1000]
    for bad in (-0.1, 1.5):
        with pytest.raises(TestbedError, match="share in"):
            loss_per_mille(bad)


def test_ruleset_counts_then_drops_before_defragmentation() -> None:
    lines = [line.strip() for line in loss_ruleset("10.77.0.2").splitlines()]
    assert "type filter hook prerouting priority -450; policy accept;" in lines
    assert 'ip saddr 10.77.0.2 counter name "from_infra" jump loss' in lines
    assert lines[lines.index("chain loss {") + 1] == "}"  # no loss until start_loss
    assert loss_rule(100).splitlines() == [
        "flush chain ip revqom_testbed loss",
        'add rule ip revqom_testbed loss numgen random mod 1000 < 100 counter name "dropped" drop',
    ]
    assert "numgen" not in loss_rule(1000)  # total loss: every packet, no draw
    with pytest.raises(TestbedError):
        loss_rule(1001)


def test_counters_are_read_from_nft_json() -> None:
    listing = json.dumps({"nftables": [
        {"metainfo": {"version": "1.0.6"}},
        {"counter": {"family": "ip", "name": "from_infra", "table": "revqom_testbed", "packets": 25,
                     "bytes": 37372}},
        {"counter": {"family": "ip", "name": "dropped", "table": "revqom_testbed", "packets": 3,
                     "bytes": 4500}},
    ]})
    assert parse_counters(listing) == LinkCounters(25, 37372, 3, 4500)
    with pytest.raises(TestbedError, match="unexpected nft counter listing"):
        parse_counters('{"nftables": [{"metainfo": {}}]}')


def test_dds_profile_is_udp_only_with_unicast_peers() -> None:
    root = ET.fromstring(dds_profile_xml(["10.77.0.1", "10.77.0.2"], max_initial_peers_range=12))
    transports = root.findall(f"{NS}transport_descriptors/{NS}transport_descriptor")
    assert [t.findtext(f"{NS}type") for t in transports] == ["UDPv4"]
    assert transports[0].findtext(f"{NS}maxInitialPeersRange") == "12"
    participant = root.find(f"{NS}participant")
    assert participant.get("is_default_profile") == "true"
    rtps = participant.find(f"{NS}rtps")
    assert rtps.findtext(f"{NS}useBuiltinTransports") == "false"
    assert [t.text for t in rtps.findall(f"{NS}userTransports/{NS}transport_id")] == [
        transports[0].findtext(f"{NS}transport_id")
    ]
    peers = rtps.findall(f"{NS}builtin/{NS}initialPeersList/{NS}locator/{NS}udpv4/{NS}address")
    assert [p.text for p in peers] == ["10.77.0.1", "10.77.0.2"]


def test_namespace_names_are_unique_per_run_and_found_stale_when_their_process_is_gone() -> None:
    ego, infra = namespace_names(pid=4242, token="ab12cd")
    assert (ego, infra) == ("revqom-tb-4242-ab12cd-ego", "revqom-tb-4242-ab12cd-infra")
    assert namespace_names()[0] != namespace_names()[0]
    listing = "\n".join([
        f"{ego} (id: 1)", infra, "revqom-tb-77-00ff00-ego (id: 0)", "revqom-tb-x-1-ego", "someone-else",
    ])
    assert stale_namespaces(listing, lambda pid: pid != 4242) == [ego, infra]
    assert stale_namespaces(listing, lambda pid: pid != 77) == ["revqom-tb-77-00ff00-ego"]
    assert stale_namespaces(listing, lambda pid: True) == []


def _scenario_specs(tmp_path: Path, slice_bytes: int = 0, interleave: int = 2):
    from tests.ros.test_scenario_file import ONE_PLUS_ONE, bag_with_agents

    bag = bag_with_agents(tmp_path / "bag", ONE_PLUS_ONE, ["vehicle"])
    config = TestbedConfig(bag=bag, model=tmp_path / "m.pt", out_dir=tmp_path / "out",
                           slice_bytes=slice_bytes, interleave=interleave)
    arguments = launch_arguments(config, tmp_path / "p.xml", tmp_path / "keys")
    return parse_launch_file(ROOT / "launch" / "scenario.launch.xml", arguments)


def test_nodes_are_placed_in_their_namespaces_and_the_replay_split_by_topic(tmp_path: Path) -> None:
    ego, infra = ["ip", "netns", "exec", "E"], ["ip", "netns", "exec", "I"]
    placed = {spec.label: spec for spec in place_nodes(_scenario_specs(tmp_path), BAG_TOPICS, ego, infra)}
    assert sorted(placed) == sorted([
        "vehicle/agent", "infrastructure/agent", "fusion/fusion", "recorder", "replay",
        "infrastructure/replay",
    ])
    where = {label: spec.arguments[:3] for label, spec in placed.items()}
    assert {label for label, args in where.items() if args == ["netns", "exec", "I"]} == {
        "infrastructure/agent", "infrastructure/replay"
    }
    assert all(args[:2] == ["netns", "exec"] for args in where.values())
    for spec in placed.values():
        assert Path(spec.executable).name == "ip" and spec.package is None
        assert spec.arguments[3:5] == [sys.executable, "-m"]
        assert {k: spec.env[k] for k in NODE_ENV} == NODE_ENV
        assert spec.env["FASTDDS_DEFAULT_PROFILES_FILE"] == str((tmp_path / "p.xml").resolve())
    assert placed["replay"].parameters[-1] == {"replay.topics": sorted(
        t for t in BAG_TOPICS if not t.startswith("/infrastructure/"))}
    assert placed["infrastructure/replay"].parameters[-1] == {
        "replay.topics": ["/infrastructure/lidar/points", "/infrastructure/pose"]
    }
    assert placed["replay"].on_exit_shutdown and not placed["infrastructure/replay"].on_exit_shutdown
    assert placed["infrastructure/replay"].namespace == "/infrastructure"
    keys = str((tmp_path / "keys").resolve())
    for label in ("vehicle/agent", "infrastructure/agent", "fusion/fusion"):  # signed and enforced
        inline = {k: v for p in placed[label].parameters if isinstance(p, dict) for k, v in p.items()}
        assert inline["security.trust_dir"] == keys, label
    assert placed["recorder"].parameters[-1] == {
        "topics.clouds": ["/vehicle/lidar/points"], "topics.encoded_bev": ["/vehicle/encoded_bev"]
    }
    with pytest.raises(ValueError, match="both vehicle and infrastructure"):
        place_nodes(_scenario_specs(tmp_path), ["/vehicle/lidar/points"], ego, infra)


@pytest.mark.parametrize(("slice_bytes", "interleave", "transport", "mode"),
                         [(0, 1, "monolithic", "monolithic"), (1100, 1, "slices", "slices_interleave1"),
                          (1100, 3, "slices", "slices_interleave3")])
def test_transport_reaches_both_agents_through_the_slice_arguments(
    tmp_path: Path, slice_bytes: int, interleave: int, transport: str, mode: str
) -> None:
    specs = _scenario_specs(tmp_path, slice_bytes, interleave)
    agents = [s for s in specs if s.executable == "agent_node"]
    assert len(agents) == 2
    for agent in agents:
        inline = {k: v for p in agent.parameters if isinstance(p, dict) for k, v in p.items()}
        assert (inline["output.slice_bytes"], inline["output.interleave"]) == (slice_bytes, interleave)
    config = TestbedConfig(bag=tmp_path, model=tmp_path, out_dir=tmp_path, slice_bytes=slice_bytes,
                           interleave=interleave)
    assert config.transport == transport
    assert run_name(config.transport, config.interleave) == mode


def _status(stamp: int, fused: bool, fraction: float | None = None, age_ms: float | None = -20.0) -> dict:
    record = {"stamp_ns": stamp, "agent_ids": ["vehicle", "infrastructure"], "fused": [True, fused],
              "message_age_ms": [0.0, age_ms]}
    if fraction is not None:
        record["cells_received_fraction"] = [1.0, fraction]
    return record


def test_cell_share_per_ego_frame_counts_unfused_and_missing_frames_as_zero() -> None:
    assert received_share(_status(1, True)) == 1.0  # a status from before slices: fused is whole
    assert received_share(_status(1, True, 0.75)) == 0.75
    assert received_share(_status(1, False, 0.0)) == 0.0
    assert received_share(None) == 0.0
    statuses = [_status(10, True, 0.5), _status(20, False, 0.0), _status(10, True, 1.0),
                _status(40, True, 1.0)]
    np.testing.assert_allclose(cell_shares(statuses, [10, 20, 30, 40]), [0.5, 0.0, 0.0, 1.0])
    neighbour = _status(50, True, 1.0, age_ms=-120.0)  # the paired sweep was lost: the one before it
    assert received_share(neighbour) == 1.0 and received_share(neighbour, max_age_ms=50.0) == 0.0
    assert received_share(_status(60, True, 1.0, age_ms=None), max_age_ms=50.0) == 0.0
    np.testing.assert_allclose(cell_shares([*statuses, neighbour], [10, 50], max_age_ms=50.0), [0.5, 0.0])


def test_wire_bytes_per_frame_between_the_first_and_last_frame_sent() -> None:
    samples = [(0, LinkCounters(0, 0, 0, 0)), (100, LinkCounters(10, 1000, 1, 100)),
               (200, LinkCounters(30, 5000, 2, 200))]
    per_bytes, per_packets = wire_per_frame(samples, [50, 150, 100])
    assert per_bytes == pytest.approx((3000 - 500) / 2)
    assert per_packets == pytest.approx((20 - 5) / 2)
    assert wire_per_frame(samples, [50]) == (None, None)


def test_dropped_share_counts_only_packets_after_the_loss_started() -> None:
    samples = [(0, LinkCounters(0, 0, 0, 0)), (100, LinkCounters(40, 4000, 0, 0))]
    final = LinkCounters(140, 14000, 25, 2500)
    assert dropped_share(samples, 50, final) == pytest.approx(25 / 120)
    assert dropped_share(samples, None, final) is None


def test_replay_topic_filter_selects_and_refuses_unknown_topics() -> None:
    pytest.importorskip("rclpy")
    from revqom_nodes.ros.replay_node import select_topics
    from revqom_nodes.runtime.errors import RuntimeConfigError

    available = {t: "type" for t in BAG_TOPICS}
    assert select_topics(available, []) == available
    assert select_topics(available, ["/infrastructure/pose"]) == {"/infrastructure/pose": "type"}
    with pytest.raises(RuntimeConfigError, match="not in the bag"):
        select_topics(available, ["/vehicle/pose", "/nope"])


def test_the_test_bed_says_in_one_line_why_it_cannot_run(monkeypatch: pytest.MonkeyPatch) -> None:
    import revqom_nodes.scenario.testbed_net as net

    monkeypatch.setattr(net.os, "geteuid", lambda: 1000)
    assert unavailable_reason.__wrapped__() == "the test bed needs root (network namespaces and nftables)"
    monkeypatch.setattr(net.os, "geteuid", lambda: 0)
    monkeypatch.setattr(net.shutil, "which", lambda tool: None if tool == "nft" else f"/usr/sbin/{tool}")
    assert "'nft' not found: apt-get install -y nftables" in unavailable_reason.__wrapped__()
    monkeypatch.setattr(net.shutil, "which", lambda tool: f"/usr/sbin/{tool}")

    def refuse(argv: list[str]) -> str:
        raise TestbedError("ip netns add failed (1): not permitted\nmore detail")

    monkeypatch.setattr(net, "_command", refuse)
    reason = unavailable_reason.__wrapped__()
    assert reason == "cannot create a network namespace here: ip netns add failed (1): not permitted"


needs_testbed = pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))


def _namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout


@needs_testbed
def test_link_is_set_up_and_always_torn_down() -> None:
    with pytest.raises(KeyError), NetworkLink(loss=0.3) as link:
        names = _namespaces()
        assert link.ego in names and link.infra in names
        assert link.counters() == LinkCounters(0, 0, 0, 0)
        ruleset = [*link.exec_prefix(link.ego), "nft", "list", "ruleset"]
        assert "numgen" not in subprocess.run(ruleset, capture_output=True, text=True, check=True).stdout
        link.start_loss()
        listed = subprocess.run(ruleset, capture_output=True, text=True, check=True).stdout
        assert "numgen random mod 1000 < 300" in listed and "priority -450" in listed
        mtu = subprocess.run(["ip", "-n", link.infra, "link", "show", "infra0"],
                             capture_output=True, text=True, check=True).stdout
        assert "mtu 1500" in mtu
        raise KeyError("a failure inside the block")
    assert link.ego not in _namespaces() and link.infra not in _namespaces()


@needs_testbed
def test_stale_namespaces_of_dead_runs_are_removed() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    ego, _ = namespace_names(pid=dead.pid)
    subprocess.run(["ip", "netns", "add", ego], check=True)
    try:
        assert ego in remove_stale_namespaces()
        assert ego not in _namespaces()
    finally:
        subprocess.run(["ip", "netns", "delete", ego], capture_output=True)
