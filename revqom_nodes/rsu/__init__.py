"""A roadside unit without ROS: the infrastructure agent on Cyclone DDS (``revqom rsu``, docs/rsu.md).

Imports the core (runtime, codec, data, trust, defaults, share) and ``cyclonedds``, never
``ros/`` or rclpy: roadside computers often run no ROS.
"""
