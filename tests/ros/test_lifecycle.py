"""run_node: a shutdown that lands inside the executor's wait is a clean exit, other errors are not."""

from __future__ import annotations

import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.impl.implementation_singleton import rclpy_implementation  # noqa: E402
from rclpy.node import Node  # noqa: E402

from revqom_nodes.ros.lifecycle import run_node  # noqa: E402


def _raise_rcl_error(shut_down_first: bool):
    def spin(node: Node) -> int:
        if shut_down_first:  # as a signal does between the executor's context check and its wait set
            rclpy.shutdown(context=node.context)
        raise rclpy_implementation.RCLError("failed to initialize wait set: the given context is not valid")

    return spin


def test_rcl_error_after_shutdown_exits_cleanly() -> None:
    assert run_node(lambda: Node("lifecycle_test"), "lifecycle_test", [], _raise_rcl_error(True)) == 0


def test_rcl_error_with_the_context_alive_is_raised() -> None:
    with pytest.raises(rclpy_implementation.RCLError):
        run_node(lambda: Node("lifecycle_test"), "lifecycle_test", [], _raise_rcl_error(False))
    assert not rclpy.ok()  # run_node shut rclpy down on the way out
