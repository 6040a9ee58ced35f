"""``FusionProcess``: ``FusionEngine.fuse`` in a child process of its own.

The fusion node receives on several threads of one Python process. In that process every
native call of a fusion (hundreds a frame) gives the GIL back and must win it again from the
reception threads, which under a flood take it thousands of times a second: the fusion slowed
down several times over and fell behind the ego's frames (docs/security.md, "Flood
resistance"). In a child process the fusion has an interpreter of its own; the node's fusion
worker sends each frame's maps down a pipe and waits for the result with the GIL released.

The child (``python -m revqom_nodes.runtime.fusion_process``: a fresh interpreter, nothing of the
parent's DDS threads inherited; the pipe a socket pair) loads the same model
file on the same device with the same thread count, comm range and partner limits, so its
results are those of an engine in the node's process, bit for bit. A frame whose fusion raises
comes back as that exception; a child that dies is started again and the frame in progress
fails with ``FusionProcessError``. The child ignores SIGINT (a launcher's Ctrl-C reaches the
whole process group): it ends when the node closes the pipe, or when the node's process ends.
Cost: a second process holding the model (its imports and model load at the node's start) and
two pipe transfers a frame (the maps' indices, the result with its detections).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

from revqom_nodes.runtime.errors import RuntimeConfigError
from revqom_nodes.runtime.frames import AssembledMap
from revqom_nodes.runtime.fusion import FusionResult
from revqom_nodes.runtime.selection import NO_LIMITS, NotFused, PartnerLimits

JOIN_TIMEOUT_S = 2.0  # close() waits this long for the child to end before killing it
_READY = "ready"


class FusionProcessError(RuntimeError):
    """The child process ended while it fused a frame (started again, unless ``close`` ended it)."""


def _serve(conn: Connection) -> None:
    """The child: receive (model path, device, threads, comm range, limits, merge), load the engine,
    report ready (or the exception that prevented it), then fuse each (ego, partners) received
    until the pipe closes (the parent's end closed, or its process gone)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from revqom_nodes.process import configure_process
    from revqom_nodes.runtime.fusion import FusionEngine
    from revqom_nodes.runtime.model import load_runtime_model

    try:
        model_path, device, num_threads, comm_range_m, limits, merge_ego_detections = conn.recv()
        try:
            configure_process(num_threads)
            engine = FusionEngine(load_runtime_model(model_path, device), comm_range_m, limits=limits,
                                  merge_ego_detections=merge_ego_detections)
        except Exception as exc:
            conn.send(exc)
            return
        conn.send(_READY)
        while True:
            ego, partners = conn.recv()
            try:
                result: Any = engine.fuse(ego, partners)
            except Exception as exc:
                result = exc
            conn.send(result)
    except (EOFError, OSError):
        return


class FusionProcess:
    """``fuse`` as ``FusionEngine(load_runtime_model(model_path, device), comm_range_m,
    limits=limits, merge_ego_detections=merge_ego_detections).fuse``, computed in a child
    process; ``num_threads`` > 0 sets the child's PyTorch threads. The child starts loading at
    once; ``wait_ready`` (or the first ``fuse``) raises RuntimeConfigError when it cannot load the
    engine. One caller at a time (the fusion worker)."""

    def __init__(
        self,
        model_path: str,
        *,
        device: str = "cpu",
        num_threads: int = 0,
        comm_range_m: float | None = None,
        limits: PartnerLimits = NO_LIMITS,
        merge_ego_detections: bool = False,
    ) -> None:
        self._args = (str(model_path), str(device), int(num_threads), comm_range_m, limits,
                      bool(merge_ego_detections))
        self._conn, self._process = self._launch()
        self._ready = False
        self._closed = False

    def _launch(self) -> tuple[Connection, subprocess.Popen]:
        # A fresh interpreter running this module (not multiprocessing's spawn, which would run the
        # parent's main module again in the child), the pipe a socket pair it inherits
        ours, theirs = socket.socketpair()
        process = subprocess.Popen(
            [sys.executable, "-m", __name__, str(theirs.fileno())], pass_fds=[theirs.fileno()]
        )
        theirs.close()
        conn = Connection(ours.detach())
        conn.send(self._args)
        return conn, process

    def wait_ready(self) -> None:
        """Wait until the child has loaded the model (it started loading when this object was made,
        so the caller can do other work meanwhile). Raises RuntimeConfigError when it could not."""
        if self._ready:
            return
        try:
            ready = self._conn.recv()
        except (EOFError, OSError):
            self._conn.close()
            raise RuntimeConfigError(f"the fusion process ended while loading the model "
                                     f"(exit code {self._process.wait()})") from None
        if ready != _READY:
            self.close()
            raise RuntimeConfigError(f"the fusion process could not load the model: {ready!r}")
        self._ready = True

    @property
    def pid(self) -> int | None:
        """The child's process id."""
        return self._process.pid

    def fuse(self, ego: AssembledMap, partners: Sequence[AssembledMap | NotFused]) -> FusionResult:
        """As ``FusionEngine.fuse``, with ``transfer_ms`` the pipe's share of the wall time (in
        ``decode_fuse_ms``); raises what it raised, or FusionProcessError when the child died."""
        self.wait_ready()
        start = time.perf_counter()
        try:
            self._conn.send((ego, list(partners)))
            result = self._conn.recv()
        except (EOFError, OSError) as exc:
            if self._closed:  # close() from another thread (the node stopping): nothing to restart
                raise FusionProcessError("the fusion process was closed") from exc
            self._conn.close()
            code = self._process.wait()
            self._conn, self._process = self._launch()
            self._ready = False
            raise FusionProcessError(f"the fusion process ended (exit code {code}); started again") from exc
        if isinstance(result, Exception):
            raise result
        return result._replace(transfer_ms=max((time.perf_counter() - start) * 1e3 - result.engine_ms, 0.0))

    def close(self) -> None:
        """End the child: close the pipe, wait ``JOIN_TIMEOUT_S``, then kill it."""
        self._closed = True
        self._conn.close()
        try:
            self._process.wait(JOIN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


if __name__ == "__main__":
    _serve(Connection(int(sys.argv[1])))
