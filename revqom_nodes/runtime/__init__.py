"""The ROS-free core of the runtime: what the agent, fusion and replay nodes call.

Modules (none imports rclpy; the nodes in ``revqom_nodes.ros`` only convert messages):

- ``frames``: ``AgentFrame``, the plain view of one received ``EncodedBEV`` message (a slice);
- ``model``: ``RuntimeModel`` (detector + frozen codec state) and device resolution;
- ``encoder``: ``AgentEncoder``, points -> slices (voxelize, backbone, quantize, pack, cut);
- ``validation``: the receiver's checks, one ``RejectReason`` per kind of bad message;
- ``inbox``: per-agent frame buffers assembled from slices, rejection counters, pairing;
- ``fusion``: ``FusionEngine``, payloads -> detections in the ego frame;
- ``latency``: percentiles of per-stage timings.
"""
