"""The launch-file runner for pip-only installs: ``revqom launch`` runs ROS 2 XML launch files.

Stands alone (no rclpy, no other ``revqom_nodes`` package): ``file`` parses a launch file with
``elements``, ``node`` and ``substitutions``; ``runner`` starts and supervises the processes;
``cli`` is the ``revqom launch`` verb. What it does not support it refuses with a clear error.
"""
