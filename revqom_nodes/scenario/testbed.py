"""The lossy-network test bed: ``launch/scenario.launch.xml`` split over two network namespaces.

```
EGO namespace: replay (vehicle topics, ground truth), vehicle agent, fusion, recorder
      | veth, MTU 1500; nftables drops a share of the infrastructure's packets (testbed_net.py)
INFRA namespace: replay (/infrastructure/* topics), infrastructure agent
```

The launch file is parsed as ``revqom launch`` parses it; each node's command is wrapped in
``ip netns exec NS`` and the replay is run twice, each half of the bag's topics (both pace the
whole bag's timeline and wait for the same endpoints, so they start together). The loss is
switched on when playing starts: under loss, discovery is slow in the lossy direction only,
and the infrastructure's replay would start seconds before the ego's (its maps then pair with
nothing). Point clouds stay inside their namespace: only EncodedBEV, statuses and DDS discovery
cross the link.
Fast DDS runs on UDPv4 only (the namespaces share /dev/shm: shared memory would bypass the
link), with unicast discovery to both addresses, from a profile written into the run's
output folder. Needs root, iproute2 and nftables.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TextIO

from revqom_nodes.defaults import node_defaults
from revqom_nodes.launcher.node import NodeSpec
from revqom_nodes.scenario.testbed_net import LinkCounters, NetworkLink, TestbedError, dds_profile_xml

log = logging.getLogger(__name__)

AGENT_DEFAULTS = node_defaults("agent")

LAUNCH_FILE = "scenario.launch.xml"
INFRA_ROS_NAMESPACE = "/infrastructure"
INFRA_TOPIC_PREFIX = "/infrastructure/"
EGO_CLOUD_TOPIC = "/vehicle/lidar/points"
EGO_BEV_TOPIC = "/vehicle/encoded_bev"
NODE_ENV = {  # the generated profile decides discovery; rmw must not narrow it to localhost
    "ROS_AUTOMATIC_DISCOVERY_RANGE": "SYSTEM_DEFAULT",
    "ROS_STATIC_PEERS": "",
    "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
}
SAMPLE_PERIOD_S = 0.2  # how often the link counters are read during a run
START_POLL_S = 0.02  # how often the recorder's file is checked for the start of playing


@dataclass(frozen=True)
class TestbedConfig:
    """One run: a bag through the two-namespace scenario at one loss rate and transport."""

    __test__ = False  # not a pytest test class

    bag: Path
    model: Path
    out_dir: Path
    loss: float = 0.0  # share of the infrastructure's IP packets dropped, [0, 1]
    slice_bytes: int = AGENT_DEFAULTS["output.slice_bytes"]  # 0: one message per frame (monolithic)
    interleave: int = AGENT_DEFAULTS["output.interleave"]  # the slices' cell order (1: row-major)
    rate: float = 0.25  # replay speed: low enough that both agents and the fusion keep up
    sync_wait_ms: float = 1000.0
    max_age_ms: float = 150.0
    encoding: str = "packed"
    device: str = "cpu"
    threads: int = 1

    @property
    def transport(self) -> str:
        return "slices" if self.slice_bytes > 0 else "monolithic"


@dataclass(frozen=True)
class TestbedRun:
    """What one run left: exit status, link counters, the recorder's file, the node log."""

    __test__ = False

    config: TestbedConfig
    status: int
    counters: LinkCounters  # at the end of the run
    samples: list[tuple[int, LinkCounters]]  # (wall clock ns, counters) every SAMPLE_PERIOD_S
    loss_started_ns: int | None  # wall clock when the loss was switched on (None: never)
    events_path: Path
    log_path: Path
    namespaces: tuple[str, str]


def launch_arguments(config: TestbedConfig, profile: Path, trust_dir: Path) -> dict[str, str]:
    """The scenario's launch arguments for one run (``profile``: the generated DDS profile;
    ``trust_dir``: the run's keys, ``scenario.keys.scenario_keys``)."""
    return {
        "bag": str(config.bag.resolve()),
        "model": str(config.model.resolve()),
        "rate": str(config.rate),
        "encoding": config.encoding,
        "device": config.device,
        "threads": str(config.threads),
        "record": "true",
        "out_dir": str(config.out_dir.resolve()),
        "sync_wait_ms": str(config.sync_wait_ms),
        "max_age_ms": str(config.max_age_ms),
        "exit_delay": str(config.sync_wait_ms / 1e3 + 3.0),
        "dds_profile": str(profile.resolve()),
        "slice_bytes": str(config.slice_bytes),
        "interleave": str(config.interleave),
        "trust_dir": str(trust_dir.resolve()),
    }


def in_namespace(spec: NodeSpec, exec_prefix: Sequence[str], **changes: object) -> NodeSpec:
    """``spec`` run through ``exec_prefix`` (``ip netns exec NS``), with ``changes`` applied."""
    from revqom_nodes.launcher.runner import resolve_executable

    command = resolve_executable(spec.package, spec.executable)
    head = resolve_executable(None, exec_prefix[0])
    return replace(
        spec,
        package=None,
        executable=head[0],
        arguments=[*exec_prefix[1:], *command, *spec.arguments],
        env={**spec.env, **NODE_ENV},
        **changes,
    )


def place_nodes(
    specs: Sequence[NodeSpec], bag_topics: Sequence[str], ego: Sequence[str], infra: Sequence[str]
) -> list[NodeSpec]:
    """The scenario's nodes in their namespaces (``ego`` / ``infra``: exec prefixes).

    Nodes under ``/infrastructure`` go to INFRA, the others to EGO; the replay is split in two
    by topic (``/infrastructure/*`` in INFRA); the recorder keeps to the ego's cloud and
    EncodedBEV topics (a second EGO subscriber of the infrastructure's EncodedBEV would double
    what crosses the link).
    """
    infra_topics = sorted(t for t in bag_topics if t.startswith(INFRA_TOPIC_PREFIX))
    ego_topics = sorted(t for t in bag_topics if not t.startswith(INFRA_TOPIC_PREFIX))
    if not infra_topics or not ego_topics:
        raise ValueError(f"the bag needs both vehicle and infrastructure topics, has {sorted(bag_topics)}")
    placed = []
    for spec in specs:
        if spec.executable == "replay_node":
            ego_parameters = [*spec.parameters, {"replay.topics": ego_topics}]
            placed.append(in_namespace(spec, ego, parameters=ego_parameters))
            placed.append(
                in_namespace(
                    spec,
                    infra,
                    label=f"{INFRA_ROS_NAMESPACE.strip('/')}/{spec.label}",
                    namespace=INFRA_ROS_NAMESPACE,
                    on_exit_shutdown=False,
                    parameters=[*spec.parameters, {"replay.topics": infra_topics}],
                )
            )
        elif spec.executable == "recorder_node":
            recorded = {"topics.clouds": [EGO_CLOUD_TOPIC], "topics.encoded_bev": [EGO_BEV_TOPIC]}
            placed.append(in_namespace(spec, ego, parameters=[*spec.parameters, recorded]))
        elif (spec.namespace or "").startswith(INFRA_ROS_NAMESPACE):
            placed.append(in_namespace(spec, infra))
        else:
            placed.append(in_namespace(spec, ego))
    return placed


class _LinkMonitor:
    """A thread that switches the loss on when playing starts and samples the link counters.

    Playing has started when the recorder's file gets its first line (the ego replay's first
    cloud); until then discovery and start-up run on a clean link. Counters are read every
    ``SAMPLE_PERIOD_S`` (wall-clock stamped).
    """

    def __init__(self, link: NetworkLink, events_path: Path) -> None:
        self.samples: list[tuple[int, LinkCounters]] = []
        self.loss_started_ns: int | None = None
        self._link, self._events_path = link, events_path
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="link-monitor", daemon=True)

    def __enter__(self) -> _LinkMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        next_sample = 0.0
        while not self._stop.wait(START_POLL_S):
            try:
                if self.loss_started_ns is None and self._playing():
                    self._link.start_loss()
                    self.loss_started_ns = time.time_ns()
                if time.monotonic() >= next_sample:
                    self.samples.append((time.time_ns(), self._link.counters()))
                    next_sample = time.monotonic() + SAMPLE_PERIOD_S
            except TestbedError as exc:
                log.warning("link monitor: %s", exc)

    def _playing(self) -> bool:
        try:
            return self._events_path.stat().st_size > 0
        except FileNotFoundError:
            return False


def _run_nodes(nodes: Sequence[NodeSpec], stream: TextIO) -> int:
    """The launch runner's ``run``, node output and the runner's own log lines into ``stream``.

    A Ctrl-C (SIGINT, SIGTERM, SIGHUP) shuts the nodes down and then raises KeyboardInterrupt,
    so that a benchmark of several runs stops instead of going on with the next.
    """
    from revqom_nodes.launcher.runner import LaunchRunner, signals_forwarded

    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("[launch] %(levelname)s %(message)s"))
    runner_log = logging.getLogger("revqom_nodes.launcher.runner")
    runner_log.addHandler(handler)
    runner = LaunchRunner(nodes, stdout=stream, stderr=stream)
    try:
        with signals_forwarded(runner):
            try:
                runner.start()
                status = runner.spin()
            finally:
                runner.shutdown()
    finally:
        runner_log.removeHandler(handler)
    if (runner.shutdown_reason or "").startswith("signal"):
        raise KeyboardInterrupt(runner.shutdown_reason)
    return status


def _write_samples(samples: Sequence[tuple[int, LinkCounters]], path: Path) -> None:
    """The counter samples as JSON lines: ``{"wall_ns", "packets", "bytes", ...}``."""
    with open(path, "w", encoding="utf-8") as stream:
        for wall_ns, counters in samples:
            stream.write(json.dumps({"wall_ns": wall_ns, **counters._asdict()}) + "\n")


def run_testbed(config: TestbedConfig) -> TestbedRun:
    """Set up the link, run the scenario until the bag ends, read the counters, tear down.

    Raises ``TestbedError`` when the link cannot be set up, KeyboardInterrupt after a Ctrl-C;
    the namespaces are deleted in every case. The run's folder gets the DDS profile, the node
    log (``launch.log``), the recorder's ``events.jsonl``, ``link_counters.jsonl`` and the
    run's keys (``keys/``: the slices are signed and authenticated).
    """
    from revqom_nodes.launcher.file import find_launch_file, parse_launch_file
    from revqom_nodes.runtime.playback import bag_info
    from revqom_nodes.scenario.keys import scenario_keys

    out = config.out_dir
    out.mkdir(parents=True, exist_ok=True)
    events_path = out / "events.jsonl"
    events_path.unlink(missing_ok=True)
    launch_file = find_launch_file(LAUNCH_FILE)
    topics = list(bag_info(config.bag).topics)
    trust_dir = scenario_keys(out / "keys")
    with NetworkLink(loss=config.loss) as link:
        profile = out / "fastdds_testbed.xml"
        profile.write_text(dds_profile_xml([link.ego_address, link.infra_address]), encoding="utf-8")
        specs = parse_launch_file(launch_file, launch_arguments(config, profile, trust_dir))
        nodes = place_nodes(specs, topics, link.exec_prefix(link.ego), link.exec_prefix(link.infra))
        log_path = out / "launch.log"
        log.info("test bed: %s, loss %.1f%%, %d nodes, node output in %s",
                 config.transport, 100 * config.loss, len(nodes), log_path)
        with open(log_path, "w", encoding="utf-8") as stream, _LinkMonitor(link, events_path) as monitor:
            status = _run_nodes(nodes, stream)
        counters = link.counters()
        namespaces = (link.ego, link.infra)
    if monitor.loss_started_ns is None:
        log.error("playing never started (no recorder output): the loss was never switched on")
    _write_samples(monitor.samples, out / "link_counters.jsonl")
    return TestbedRun(
        config, status, counters, monitor.samples, monitor.loss_started_ns, events_path, log_path, namespaces
    )
