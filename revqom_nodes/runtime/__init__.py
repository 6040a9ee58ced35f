"""The ROS-free core of the runtime: what the agent, fusion and replay nodes call.

Modules (none imports rclpy; the nodes in ``revqom_nodes.ros`` only convert messages):

- ``frames``: ``AgentFrame``, the plain view of one received ``EncodedBEV`` message;
- ``model``: ``RuntimeModel`` (detector + frozen codec state) and device resolution;
- ``encoder``: ``AgentEncoder``, points -> payload (voxelize, backbone, quantize, pack);
- ``validation``: the receiver's checks, one ``RejectReason`` per kind of bad message;
- ``inbox``: per-agent message buffers, rejection counters, pairing with ego frames;
- ``fusion``: ``FusionEngine``, payloads -> detections in the ego frame;
- ``latency``: percentiles of per-stage timings;
- ``report`` and ``render``: the demo's summary (AP, bytes, latency) and BEV pictures.
"""
