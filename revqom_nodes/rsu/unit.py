"""``RoadsideUnit``: the infrastructure agent as a plain process: sweeps -> signed EncodedBEV on DDS.

What ``ros/agent_node.py`` does per sweep, without ROS: encode with the runtime's
``AgentEncoder`` (the model file's backbone and codec, the agent's encoding, slice budget and
cell order), sign every slice with the agent's key when ``security.trust_dir`` is set, and
publish the slices back to back as ``revqom/msg/EncodedBEV`` on ``/<agent.id>/<output.topic>``
through Cyclone DDS (``rsu.dds``), the DDS type and topic rclpy uses. Sweeps come from a
DAIR-V2X-C root or a bag (``rsu.source``) and are played on the wall clock at ``source.rate``
or, with ``source.clock: ros``, as the ROS ``/clock`` reaches each stamp. A sweep that fails to
encode is logged and skipped; the unit goes on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from revqom_nodes.process import configure_process
from revqom_nodes.rsu.dds import (
    clock_reader,
    domain_id_from_env,
    encoded_bev_writer,
    participant,
    slice_to_dds,
    time_to_ns,
)
from revqom_nodes.rsu.source import Sweep, bag_sweeps, dataset_sweeps
from revqom_nodes.runtime.encoder import AgentEncoder, parse_encoding
from revqom_nodes.runtime.errors import RuntimeConfigError
from revqom_nodes.runtime.latency import RateLimiter
from revqom_nodes.runtime.model import load_runtime_model
from revqom_nodes.runtime.playback import Pacer
from revqom_nodes.runtime.poses import static_pose
from revqom_nodes.runtime.security import load_signer
from revqom_nodes.trust.certificates import Role

log = logging.getLogger(__name__)

ROLES = {role.label: role for role in Role}  # the values are msg/EncodedBEV.msg's ROLE_* constants
CLOCK_POLL_S = 0.005  # how often the /clock reader is read while a sweep waits for its time
LOG_INTERVAL_S = 5.0  # progress and failures are logged at most this often (per kind)


def agent_topic(agent_id: str, topic: str) -> str:
    """An agent parameter's topic as the launch file resolves it for the agent node in namespace
    ``/<agent_id>``: relative names go under it, absolute ones stay."""
    return topic if topic.startswith("/") else f"/{agent_id}/{topic}"


class RoadsideUnit:
    """Encodes and publishes one agent's recorded sweeps; ``settings``: ``rsu.config.resolve``'s."""

    def __init__(self, settings: dict[str, Any]) -> None:
        role = settings["agent.role"]
        if role not in ROLES:
            raise RuntimeConfigError(f"agent.role must be one of {list(ROLES)}, got {role!r}")
        configure_process(settings["torch.num_threads"])
        self.settings = settings
        self.agent_id: str = settings["agent.id"]
        self.role = int(ROLES[role])
        self.static_pose = static_pose(settings["pose.static"])
        self.model = load_runtime_model(settings["model.path"], settings["device"])
        self.encoder = AgentEncoder(
            self.model,
            parse_encoding(settings["codec.encoding"]),
            settings["output.slice_bytes"],
            settings["output.interleave"],
        )
        trust_dir = settings["security.trust_dir"]
        self.signer = load_signer(trust_dir, agent_id=self.agent_id, role=self.role) if trust_dir else None
        self.topic = agent_topic(self.agent_id, settings["output.topic"])
        self.domain_id = domain_id_from_env()
        self.participant, self._domain = participant(self.domain_id)
        self.writer = encoded_bev_writer(self.participant, self.topic)
        self.clock = clock_reader(self.participant) if settings["source.clock"] == "ros" else None
        self.clock_ns = -1  # the newest ROS /clock time received
        self.sequence = 0
        self.frames_encoded = 0
        self.frames_failed = 0
        self.limiter = RateLimiter(LOG_INTERVAL_S)
        log.info(
            "roadside unit %s (%s) on %s: %s on DDS domain %d, %s payloads%s, codebook %s, %s",
            self.agent_id,
            role,
            self.model.device,
            self.topic,
            self.domain_id,
            self.encoder.encoding.name.lower(),
            f" in slices of <= {self.encoder.slice_bytes} B" if self.encoder.slice_bytes else "",
            self.model.codebook_id[:12],
            f"signed ({trust_dir})" if self.signer is not None else "unsigned",
        )

    def sweeps(self) -> Iterator[Sweep]:
        """The configured source's sweeps."""
        s = self.settings
        if s["source.data"]:
            return dataset_sweeps(s["source.data"], s["source.split"], self.agent_id)
        pose_topic = None if self.static_pose is not None else agent_topic(self.agent_id, s["pose.topic"])
        return bag_sweeps(
            s["source.bag"], agent_topic(self.agent_id, s["input.topic"]), pose_topic, s["pose.max_age_ms"]
        )

    def run(self) -> int:
        """Play every sweep of the source; the number of sweeps published."""
        wait = self._wait_for_clock if self.clock is not None else self._pacer(self.settings["source.rate"])
        for sweep in self.sweeps():
            wait(sweep.stamp_ns)
            self.publish(sweep)
        log.info("%s: %d sweeps published, %d failed", self.agent_id, self.frames_encoded, self.frames_failed)
        return self.frames_encoded

    def publish(self, sweep: Sweep) -> None:
        """Encode one sweep and write its slices back to back."""
        T = self.static_pose if self.static_pose is not None else sweep.T_world_from_lidar
        try:
            encoded = self.encoder.encode(sweep.points)
            messages = self.encoder.messages(
                encoded.slices,
                agent_id=self.agent_id,
                T_world_from_lidar=T,
                stamp_ns=sweep.stamp_ns,
                sequence=self.sequence + 1,
                role=self.role,
                frame_id=sweep.frame_id,
                signer=self.signer,
            )
        except Exception as exc:  # a bad sweep must not end the unit, whatever its defect
            self.frames_failed += 1
            if self.limiter.allow(type(exc).__name__):
                log.warning("sweep %d skipped: %s: %s (%d failed so far)", sweep.stamp_ns, type(exc).__name__,
                            exc, self.frames_failed)
            return
        self.sequence += 1
        for message in messages:
            self.writer.write(slice_to_dds(message))
        self.frames_encoded += 1
        if self.limiter.allow("progress"):
            log.info(
                "%s: sweep %d sent in %d slices, %d B, encoded in %.1f ms (%d sent so far)",
                self.agent_id, sweep.stamp_ns, len(messages), encoded.payload_bytes, encoded.encode_ms,
                self.frames_encoded,
            )

    @staticmethod
    def _pacer(rate: float) -> Callable[[int], None]:
        pacer = Pacer(rate)
        started = False

        def wait(stamp_ns: int) -> None:
            nonlocal started
            if not started:
                pacer.start(stamp_ns)
                started = True
            time.sleep(max(0.0, pacer.seconds_until(stamp_ns)))

        return wait

    def _wait_for_clock(self, stamp_ns: int) -> None:
        """Until the ROS /clock reaches ``stamp_ns``."""
        while True:
            for sample in self.clock.take(N=16):
                self.clock_ns = max(self.clock_ns, time_to_ns(sample.clock))
            if self.clock_ns >= stamp_ns:
                return
            time.sleep(CLOCK_POLL_S)
