"""The worker thread of the agent and fusion nodes: reception callbacks queue, it does the work.

Callbacks (the executor's thread) store what arrived and call ``wake()``; the worker asks
``take()`` under the same lock for the next item, or how long to wait for one, and runs
``handle(item)`` outside the lock, so reception never waits on inference. ``stop()`` ends it
(``destroy_node``). Once the node stops or its context is shut down (Ctrl-C), nothing more is
published: an error from a publisher whose context is gone ends the thread quietly; any other
error in ``handle`` is logged and the worker goes on with the next item.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from rclpy.node import Node

Item = TypeVar("Item")
JOIN_TIMEOUT_S = 1.0  # stop() waits this long for an item in progress (the thread is a daemon)


class Worker(Generic[Item]):
    """A daemon thread running ``handle(item)`` for each item ``take()`` hands out.

    ``take() -> (item, wait_s)``: the next item, or None and how long to wait at most before
    asking again (``math.inf``: until woken). Called with the lock held; keep it quick.
    """

    def __init__(
        self,
        node: Node,
        name: str,
        take: Callable[[], tuple[Item | None, float]],
        handle: Callable[[Item], None],
    ) -> None:
        self._node, self._take, self._handle = node, take, handle
        self._wake = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def lock(self) -> threading.Condition:
        """Held by the worker while it calls ``take``; callbacks hold it to change what ``take`` reads."""
        return self._wake

    def wake(self) -> None:
        """Something arrived: have the worker ask ``take()`` again."""
        with self._wake:
            self._wake.notify()

    @property
    def stopped(self) -> bool:
        return self._stopping or not self._node.context.ok()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self.stopped:
                    item, wait_s = self._take()
                    if item is not None:
                        break
                    self._wake.wait(None if math.isinf(wait_s) else max(wait_s, 0.0))
                if self.stopped:
                    return
            try:
                self._handle(item)
            except Exception as exc:  # one bad item must not end the node
                if self.stopped:  # Ctrl-C mid-item: the publishers' context is gone, publish nothing
                    return
                self._node.get_logger().error(f"{self._thread.name} worker: {exc!r}")

    def stop(self) -> None:
        """End the thread (after the item in progress, waiting at most ``JOIN_TIMEOUT_S``)."""
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        self._thread.join(timeout=JOIN_TIMEOUT_S)
