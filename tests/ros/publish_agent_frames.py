"""Child process of test_fusion_node: an agent that sends one EncodedBEV every period.

Usage: ``python -m tests.ros.publish_agent_frames MESSAGE_FILE TOPIC PERIOD_S``; the file
holds a serialized EncodedBEV whose stamp and sequence are refreshed at each publish
(stamp = wall clock), as a roadside unit would send its latest sweep.
"""

import sys
import time
from pathlib import Path

from rclpy.node import Node
from rclpy.serialization import deserialize_message
from revqom.msg import EncodedBEV

from revqom_nodes.ros.conversions import ns_to_stamp
from revqom_nodes.ros.lifecycle import run_node
from revqom_nodes.ros.qos import ENCODED_BEV_QOS


def main() -> int:
    path, topic, period_s = sys.argv[1], sys.argv[2], float(sys.argv[3])
    message = deserialize_message(Path(path).read_bytes(), EncodedBEV)

    def make_node() -> Node:
        node = Node("fake_agent")
        publisher = node.create_publisher(EncodedBEV, topic, ENCODED_BEV_QOS)

        def publish() -> None:
            message.header.stamp = ns_to_stamp(time.time_ns())
            message.sequence += 1
            publisher.publish(message)

        node.create_timer(period_s, publish)
        return node

    return run_node(make_node, "fake_agent")


if __name__ == "__main__":
    sys.exit(main())
