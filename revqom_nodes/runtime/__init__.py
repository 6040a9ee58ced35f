"""The ROS-free core of the runtime: what the agent, fusion and replay nodes call.

Modules (none imports rclpy; the nodes in ``revqom_nodes.ros`` only convert messages):

- ``frames``: ``ReceivedSlice``, one received ``EncodedBEV`` message as it arrived, and
  ``AssembledMap``, one agent's sweep assembled from its slices;
- ``model``: ``RuntimeModel`` (detector + frozen codec state) and device resolution;
- ``encoder``: ``AgentEncoder``, points -> slices (voxelize, backbone, quantize, pack, cut)
  and the messages a receiver gets from them;
- ``validation``: the receiver's checks, one ``RejectReason`` per kind of bad message, and
  ``FrameAssembly``, a sweep's accepted slices -> its AssembledMap;
- ``security``: signing slices at the agent and authenticating them at the receiver (modes
  enforce, permissive, off; docs/security.md);
- ``inbox``: per-agent frame buffers assembled from slices, rejection counters, pairing;
- ``selection``: which partners a frame fuses (comm range, then the most new occupied cells per byte
  first within ``fusion.max_partners`` and ``fusion.max_bytes_per_frame``) and why the others are not;
- ``fusion``: ``FusionEngine``, assembled maps -> detections in the ego frame;
- ``latency``: the stage clock and percentiles of per-stage timings.

``revqom eval`` and ``revqom bench pipeline`` drive the same encoder, validation and engine.
"""
