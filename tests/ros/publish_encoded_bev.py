"""Child process of test_message_roundtrip: publishes one known EncodedBEV every 50 ms."""

import sys

from rclpy.node import Node

from revqom_nodes.ros.lifecycle import run_node
from tests.ros.encoded_bev_sample import make_encoded_bev


def main() -> int:
    message = make_encoded_bev()

    def make_node() -> Node:
        node = Node("roundtrip_publisher")
        publisher = node.create_publisher(type(message), "roundtrip/encoded_bev", 10)
        node.create_timer(0.05, lambda: publisher.publish(message))
        return node

    return run_node(make_node, "roundtrip_publisher")


if __name__ == "__main__":
    sys.exit(main())
