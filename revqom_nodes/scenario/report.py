"""The demo's summary: a recorder's JSON lines + ground truth -> metrics (AP, bytes, latency).

Latency stages, all from one host clock (DDS source / receive timestamps, see recorder_node):

- ``encode``: points -> payload inside each agent (AgentStatus.encode_ms);
- ``transport``: EncodedBEV receive time - publish time (measured at the recorder, a second
  subscriber of the same topics on the same host);
- ``pairing_wait``: from the ego's EncodedBEV publish (its last slice) to the start of its
  fusion: transport plus the wait for the partners' paired messages (``fusion.sync_wait_ms``;
  with the replay slowed down, waiting for a partner's next sweep takes longer in wall time);
- ``decode_fuse``: payloads -> detections in the fusion node (FusionStatus.decode_fuse_ms);
- ``end_to_end``: detections publish time - the ego sweep's publish time by the replay.

``partner_age_ms``: the age (ego sweep stamp - partner sweep stamp, FusionStatus.message_age_ms)
of every partner map fused, over all frames: what the fusion node paired, e.g. under a replay's
``replay.partner_delay_ms``.

Bytes are per agent per frame: the payloads of all of a frame's slices summed (what the agent
sent for the frame, its AgentStatus.payload_bytes), as ``revqom eval`` counts a frame's map.

AP uses ``evaluation.ap.ApAccumulator`` over the range ``revqom eval`` uses
(``evaluation.runner.eval_range``), so the two agree on the same frames.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from revqom_nodes.codec.wire import Encoding, packed_size
from revqom_nodes.data.dairv2x import CooperativeFrame
from revqom_nodes.evaluation.ap import ApAccumulator
from revqom_nodes.evaluation.bandwidth import raw_bytes
from revqom_nodes.runtime.latency import summarize_ms

log = logging.getLogger(__name__)

NS_PER_MS = 1_000_000
FUSION_KINDS = ("detections", "fusion_status")  # a fusion node's records: one ego's


class GroundTruthFrame(NamedTuple):
    """One evaluated frame: the ego sweep's stamp and the cooperative boxes in the ego frame."""

    frame_id: str
    stamp_ns: int
    boxes: np.ndarray  # (M, 7)


@dataclass
class RunEvents:
    """A recorder file, split by kind (each a list of the JSON records)."""

    by_kind: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    malformed_lines: int = 0

    @classmethod
    def load(cls, path: str | Path) -> RunEvents:
        events = cls()
        with open(path, encoding="utf-8") as stream:
            for line in stream:
                try:
                    record = json.loads(line)
                    events.by_kind[record["kind"]].append(record)
                except (json.JSONDecodeError, KeyError, TypeError):
                    events.malformed_lines += 1  # a line cut short when the recorder was killed
        return events

    def __getitem__(self, kind: str) -> list[dict[str, Any]]:
        return self.by_kind.get(kind, [])

    def for_ego(self, frame_id: str) -> RunEvents:
        """One ego's view of the run: its fusion node's records (detections and fusion status in
        its LiDAR frame ``frame_id``) and every agent's."""
        events = RunEvents(malformed_lines=self.malformed_lines)
        for kind, records in self.by_kind.items():
            mine = kind not in FUSION_KINDS
            events.by_kind[kind] = [r for r in records if mine or r.get("frame_id") == frame_id]
        return events


def ground_truth(frames: Sequence[CooperativeFrame]) -> list[GroundTruthFrame]:
    """Reader frames (``ego_frame`` for another ego) -> their ego stamps and boxes in the ego frame."""
    return [
        GroundTruthFrame(f.frame_id, f.ego.timestamp_us * 1000, f.boxes_in(f.ego.T_world_from_lidar))
        for f in frames
    ]


def detections_by_stamp(events: RunEvents) -> dict[int, dict[str, Any]]:
    """The first detections record of each ego stamp."""
    out: dict[int, dict[str, Any]] = {}
    for record in events["detections"]:
        out.setdefault(record["stamp_ns"], record)
    return out


def frame_payloads(events: RunEvents) -> dict[str, list[int]]:
    """Per agent: the payload bytes of each of its frames, all slices of a frame summed.

    A frame is one (agent, stamp); frames the recorder did not get every slice of (best-effort
    QoS) are left out, so that each value is what the agent sent for that frame.
    """
    slices: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for record in events["encoded_bev"]:
        slices[record["agent_id"], record["stamp_ns"]].append(record)
    out: dict[str, list[int]] = defaultdict(list)
    for (agent_id, _), records in sorted(slices.items()):
        if len({r["slice_index"] for r in records}) == records[0]["num_slices"]:
            out[agent_id].append(sum(r["payload_bytes"] for r in records))
    return dict(out)


def _bytes_summary(events: RunEvents, channels: int) -> dict[str, Any]:
    """Per agent, per frame: mean bytes sent (all slices), packed size (exact formula), entropy
    size (the bytes sent, when entropy-coded: ENTROPY or CONTEXT)."""
    per_agent: dict[str, Any] = {}
    first_by_agent: dict[str, dict[str, Any]] = {}
    for record in events["encoded_bev"]:
        first_by_agent.setdefault(record["agent_id"], record)
    entropy_agents = {r["agent_id"] for r in events["encoded_bev"] if r["encoding"] != Encoding.PACKED}
    for agent_id, sizes in sorted(frame_payloads(events).items()):
        first = first_by_agent[agent_id]
        height, width = first["height"], first["width"]
        packed = packed_size(height, width, first["num_quantizers"], first["codebook_size"])
        sent = float(np.mean(sizes))
        entropy_coded = agent_id in entropy_agents
        raw = raw_bytes(channels, height, width)
        per_agent[agent_id] = {
            "frames": len(sizes),
            "messages": sum(r["agent_id"] == agent_id for r in events["encoded_bev"]),
            "sent": sent,
            "packed": packed,
            "entropy": sent if entropy_coded else None,
            "raw_float32": raw,
            "compression_vs_raw": {"packed": raw / packed, "entropy": raw / sent if entropy_coded else None},
            "bpp": {
                "packed": packed * 8 / (height * width),
                "entropy": sent * 8 / (height * width) if entropy_coded else None,
            },
        }
    return per_agent


def _mean_per_agent_frame(per_agent: dict[str, Any], key: str) -> float | None:
    """Mean of ``key`` over every frame of every agent that has it (``revqom eval``'s mean)."""
    rows = [a for a in per_agent.values() if a[key] is not None]
    frames = sum(a["frames"] for a in rows)
    return sum(a[key] * a["frames"] for a in rows) / frames if frames else None


def _latency(events: RunEvents, ego_cloud_topic: str, ego_agent_id: str) -> dict[str, Any]:
    clouds = {r["stamp_ns"]: r["source_ns"] for r in events["cloud"] if r.get("topic") == ego_cloud_topic}
    ego_sent: dict[int, int] = {}  # the publish time of the ego frame's last slice
    for r in events["encoded_bev"]:
        if r["agent_id"] == ego_agent_id:
            ego_sent[r["stamp_ns"]] = max(r["source_ns"], ego_sent.get(r["stamp_ns"], 0))
    fuse_ms = {r["stamp_ns"]: r["decode_fuse_ms"] for r in events["fusion_status"]}
    detections = detections_by_stamp(events)
    end_to_end = [(d["source_ns"] - clouds[s]) / NS_PER_MS for s, d in detections.items() if s in clouds]
    waits = [
        (d["source_ns"] - ego_sent[s]) / NS_PER_MS - fuse_ms[s]
        for s, d in detections.items()
        if s in ego_sent and s in fuse_ms
    ]
    transport = ((r["received_ns"] - r["source_ns"]) / NS_PER_MS for r in events["encoded_bev"])
    return {
        "encode": summarize_ms(r["encode_ms"] for r in events["agent_status"]),
        "transport": summarize_ms(transport),
        "pairing_wait": summarize_ms(waits),
        "decode_fuse": summarize_ms(r["decode_fuse_ms"] for r in events["fusion_status"]),
        "end_to_end": summarize_ms(end_to_end),
    }


def summarize_run(
    events: RunEvents,
    frames: Sequence[GroundTruthFrame],
    *,
    range_m: Sequence[float],
    channels: int,
    ego_cloud_topic: str = "/vehicle/lidar/points",
    ego_agent_id: str = "vehicle",
) -> dict[str, Any]:
    """Metrics of one recorded run against ``frames`` (the keys ``revqom eval`` also writes where
    they overlap: ``ap``, ``frames``, ``ground_truth_boxes``, ``bytes_per_agent_frame``, ``bpp``,
    ``eval_range_m``), plus ``latency_ms`` and the runtime's own counts."""
    accumulator = ApAccumulator(range_m=range_m)
    detections = detections_by_stamp(events)
    missing, count, fused_all = [], 0, 0
    for frame in frames:
        record = detections.get(frame.stamp_ns)
        if record is None:
            missing.append(frame.frame_id)
            boxes, scores = np.zeros((0, 7)), np.zeros(0)
        else:
            boxes = np.asarray(record["boxes"], np.float64).reshape(-1, 7)
            scores = np.asarray(record["scores"], np.float64)
            fused_all += len(record["fused_agent_ids"]) > 1
        count += len(scores)
        accumulator.add_frame(boxes, scores, frame.boxes)
    per_agent = _bytes_summary(events, channels)
    mean_packed, mean_entropy = (_mean_per_agent_frame(per_agent, key) for key in ("packed", "entropy"))
    cells = None
    if events["encoded_bev"]:
        first = events["encoded_bev"][0]
        cells = first["height"] * first["width"]
    statuses = events["fusion_status"]
    if missing:
        log.warning(
            "%d of %d frames have no detections message: %s",
            len(missing),
            len(frames),
            ", ".join(missing[:10]),
        )
    return {
        "ap": accumulator.result(),
        "frames": len(frames),
        "ground_truth_boxes": accumulator.num_gt,
        "detections": count,
        "frames_with_detections_message": len(frames) - len(missing),
        "frames_fused_with_partners": fused_all,
        "missing_frames": missing,
        "bytes_per_agent_frame": {"packed": mean_packed, "entropy": mean_entropy},
        "bpp": {
            "packed": None if mean_packed is None or not cells else mean_packed * 8 / cells,
            "entropy": None if mean_entropy is None or not cells else mean_entropy * 8 / cells,
        },
        "bytes_per_agent": per_agent,
        "eval_range_m": list(range_m),
        "rejected": statuses[-1]["rejected"] if statuses else {},
        "latency_ms": _latency(events, ego_cloud_topic, ego_agent_id),
        "partner_age_ms": summarize_ms(fused_partner_ages(events)),
    }


def fused_partner_ages(events: RunEvents) -> list[float]:
    """The age in ms of every partner map fused (FusionStatus: every fused agent but the ego, the
    first), frame after frame."""
    return [
        age
        for status in events["fusion_status"]
        for age, fused in zip(status["message_age_ms"][1:], status["fused"][1:], strict=True)
        if fused
    ]
