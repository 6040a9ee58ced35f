"""The QoS of every runtime topic, in one place.

| topic | QoS | why |
|---|---|---|
| point clouds (replay -> agents) | sensor data: best effort, keep last 5 | a late sweep is not resent |
| EncodedBEV (agents -> fusion) | best effort, keep last 64 | a late map is not resent; slices burst |
| detections, statuses, ground truth | reliable, keep last 10 | few, small, consumers want each one |
| poses (replay -> agents) | reliable, keep last 50 | the agent looks back for the pose at a sweep's stamp |
| /clock | best effort, keep last 1 | as ``ros2 bag play`` publishes it |
| markers (RViz) | reliable, keep last 1 | only the newest picture matters |
"""

from __future__ import annotations

from rclpy.qos import (
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)

SENSOR_QOS = qos_profile_sensor_data
# Depth 64: a frame's slices (37 for a 128 x 128 PACKED map of 18-bit cells in 1,000-byte slices) arrive
# back to back and must not push each other out of the reader's history before the callback takes them.
ENCODED_BEV_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=64, reliability=ReliabilityPolicy.BEST_EFFORT
)
RESULT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
POSE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=50, reliability=ReliabilityPolicy.RELIABLE)
CLOCK_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
MARKER_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE)
