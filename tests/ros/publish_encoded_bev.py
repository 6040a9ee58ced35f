"""Child process of test_message_roundtrip: publishes one known EncodedBEV every 50 ms."""

import sys

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node

from tests.ros.encoded_bev_sample import make_encoded_bev


def main() -> None:
    rclpy.init()
    node = Node("roundtrip_publisher")
    publisher = node.create_publisher(type(make_encoded_bev()), "roundtrip/encoded_bev", 10)
    message = make_encoded_bev()
    node.create_timer(0.05, lambda: publisher.publish(message))
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
