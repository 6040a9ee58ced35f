"""The QoS of every runtime topic, in one place.

| topic | QoS | why |
|---|---|---|
| point clouds (replay -> agents) | sensor data: best effort, keep last 5 | a late sweep is not resent |
| EncodedBEV (agents -> fusion) | best effort, keep last 512 | a late map is not resent; slices burst |
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
# Depth 512: a frame's slices (37 for a 128 x 128 PACKED map of 18-bit cells in 1,000-byte slices) arrive
# back to back and must not push each other out of the reader's history before the callback takes them,
# which a loaded machine delays by seconds. In the network test bed without packet loss (8 frames at half
# speed, other processes keeping 2 cores at a load of 6-9) the fusion node took 49-66% of the slices that
# the recorder beside it received with keep-last 64, about 97% with 256 and all of them with 512, none
# rejected. At most 512 x 37 kB (a whole PACKED map per message) is held per agent topic.
ENCODED_BEV_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=512, reliability=ReliabilityPolicy.BEST_EFFORT
)
RESULT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
POSE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=50, reliability=ReliabilityPolicy.RELIABLE)
CLOCK_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
MARKER_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE)
