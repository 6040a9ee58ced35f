"""``recorder_node``: writes the runtime's outputs to a JSON-lines file, with DDS timestamps.

One line per received message (``kind``: ``detections``, ``fusion_status``, ``agent_status``,
``encoded_bev``, ``cloud``; detections and fusion status of every ego, told apart by
``frame_id``, the ego's LiDAR frame), each with ``stamp_ns`` (the message's header stamp, the sweep
time) and the DDS ``source_ns`` (publisher's wall clock at publish) and ``received_ns``
(wall clock at this node). The demo's summary reads it: detections per frame, bytes per
agent, and the latency of each stage from these times (all on one host clock). Clouds are
taken serialized (only their header stamp is read), EncodedBEV payloads are not kept.
Lines are flushed as written; the file is closed on shutdown.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from rclpy.node import Node
from rclpy.subscription import MessageInfo
from revqom.msg import AgentStatus, Detection3DArray, EncodedBEV, FusionStatus
from sensor_msgs.msg import PointCloud2

from revqom_nodes.ros.conversions import cdr_header_stamp_ns, msg_to_boxes, stamp_to_ns
from revqom_nodes.ros.lifecycle import exit_process, run_node
from revqom_nodes.ros.parameters import declare_parameters
from revqom_nodes.ros.qos import ENCODED_BEV_QOS, RESULT_QOS, SENSOR_QOS
from revqom_nodes.runtime.errors import RuntimeConfigError


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


class RecorderNode(Node):
    """Subscribes to the configured topics and appends one JSON object per message."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__("recorder_node", **kwargs)
        params = declare_parameters(self, "recorder")
        path = params["output.path"]
        if not path:
            raise RuntimeConfigError("parameter output.path is required")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] | None = open(path, "a", encoding="utf-8")
        self.lines = 0
        for topic in params["topics.detections"]:
            self.create_subscription(Detection3DArray, topic, self._on_detections, RESULT_QOS)
        for topic in params["topics.fusion_status"]:
            self.create_subscription(FusionStatus, topic, self._on_fusion_status, RESULT_QOS)
        for topic in params["topics.agent_status"]:
            self.create_subscription(AgentStatus, topic, self._on_agent_status, RESULT_QOS)
        for topic in params["topics.encoded_bev"]:
            self.create_subscription(EncodedBEV, topic, self._on_encoded, ENCODED_BEV_QOS)
        for topic in params["topics.clouds"]:
            self.create_subscription(PointCloud2, topic, self._cloud_callback(topic), SENSOR_QOS, raw=True)
        self.get_logger().info(f"recording to {path}")

    def _write(self, kind: str, stamp_ns: int, info: MessageInfo, **fields: Any) -> None:
        if self._file is None:
            return
        record = {
            "kind": kind,
            "stamp_ns": stamp_ns,
            "source_ns": info["source_timestamp"],
            "received_ns": info["received_timestamp"],
            **fields,
        }
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        self.lines += 1

    def _on_detections(self, msg: Detection3DArray, info: MessageInfo) -> None:
        boxes, scores = msg_to_boxes(msg)
        self._write(
            "detections",
            stamp_to_ns(msg.header.stamp),
            info,
            frame_id=msg.header.frame_id,
            fused_agent_ids=list(msg.fused_agent_ids),
            boxes=boxes.tolist(),
            scores=scores.tolist(),
        )

    def _on_fusion_status(self, msg: FusionStatus, info: MessageInfo) -> None:
        self._write(
            "fusion_status",
            stamp_to_ns(msg.header.stamp),
            info,
            frame_id=msg.header.frame_id,
            agent_ids=list(msg.agent_ids),
            fused=list(msg.fused),
            not_fused_reason=list(msg.not_fused_reason),
            message_age_ms=[_finite(a) for a in msg.message_age_ms],
            bytes_received=list(msg.bytes_received),
            cells_received_fraction=list(msg.cells_received_fraction),
            frames_published=msg.frames_published,
            rejected=dict(zip(msg.rejected_reasons, msg.rejected_counts, strict=True)),
            decode_fuse_ms=msg.decode_fuse_ms,
            ego_head=msg.ego_head,
        )

    def _on_agent_status(self, msg: AgentStatus, info: MessageInfo) -> None:
        self._write(
            "agent_status",
            stamp_to_ns(msg.header.stamp),
            info,
            agent_id=msg.agent_id,
            frames_encoded=msg.frames_encoded,
            frames_failed=msg.frames_failed,
            encode_ms=msg.encode_ms,
            payload_bytes=msg.payload_bytes,
            encoding=msg.encoding,
        )

    def _on_encoded(self, msg: EncodedBEV, info: MessageInfo) -> None:
        self._write(
            "encoded_bev",
            stamp_to_ns(msg.header.stamp),
            info,
            agent_id=msg.agent_id,
            sequence=msg.sequence,
            slice_index=msg.slice_index,
            num_slices=msg.num_slices,
            payload_bytes=len(msg.payload),
            encoding=msg.encoding,
            height=msg.height,
            width=msg.width,
            codebook_size=msg.codebook_size,
            num_quantizers=msg.num_quantizers,
        )

    def _cloud_callback(self, topic: str) -> Callable[[bytes, MessageInfo], None]:
        def on_cloud(raw: bytes, info: MessageInfo) -> None:
            self._write("cloud", cdr_header_stamp_ns(raw), info, topic=topic, serialized_bytes=len(raw))

        return on_cloud

    def destroy_node(self) -> None:
        if self._file is not None:
            self._file.flush()
            self._file.close()
            self._file = None
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    return run_node(RecorderNode, "recorder_node", args)


if __name__ == "__main__":
    exit_process(main())
