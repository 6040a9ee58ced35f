"""The one `main` every revqom node shares: init, build, spin, clean shutdown, quick exit."""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import NoReturn

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.impl.implementation_singleton import rclpy_implementation
from rclpy.node import Node

from revqom_nodes.runtime.errors import RuntimeConfigError


def run_node(
    make_node: Callable[[], Node],
    logger_name: str,
    args: list[str] | None = None,
    spin: Callable[[Node], int] | None = None,
) -> int:
    """Run one node until it finishes or is interrupted; returns the exit status.

    ``spin(node) -> status`` defaults to ``rclpy.spin`` (status 0). Ctrl-C and an
    external shutdown end the node cleanly with status 0, also when the shutdown lands between
    the executor's check of its context and its wait (rclpy then raises RCLError, "the given
    context is not valid"; seen once in CI as a node's exit status 1); a configuration error
    (bad parameter, unreadable model) is logged and gives status 1. SIGUSR1 writes every
    thread's Python stack to stderr: what a node that does not stop is doing (the tests'
    ``stop`` sends it before they kill one).
    """
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    rclpy.init(args=args)
    node = None
    status = 0
    try:
        node = make_node()
        if spin is None:
            rclpy.spin(node)
        else:
            status = spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        status = 0
    except rclpy_implementation.RCLError:
        if node is None or node.context.ok():
            raise
        status = 0
    except RuntimeConfigError as exc:
        rclpy.logging.get_logger(logger_name).error(str(exc))
        status = 1
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return status


def exit_process(status: int) -> NoReturn:
    """End a node's process with ``status`` after ``run_node`` shut it down cleanly.

    Skips the interpreter's teardown: with torch loaded it took 1-3 s under load (libtorch's
    static destructors), while launchers send SIGTERM 2-5 s after SIGINT. Streams and logging
    are flushed first; nodes close their own files in ``destroy_node``.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(status)
