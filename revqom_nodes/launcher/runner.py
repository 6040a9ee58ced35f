"""Running the nodes of a launch file as child processes (the pip-only ``ros2 launch``).

Each node runs in its own process group, its stdout and stderr streamed line by line
with a ``[label]`` prefix. Shutdown (Ctrl-C, SIGTERM, a node with
``on_exit="shutdown"`` ending, or ``LaunchRunner.shutdown``) sends SIGINT to every
group, then SIGTERM after ``sigterm_timeout_s``, then SIGKILL after ``sigkill_timeout_s``
(per node overrides come from the launch file), as ``ros2 launch`` does; group members
left behind by an exited node are ended too. On Linux every child also gets
``PR_SET_PDEATHSIG`` = SIGKILL, so none outlives a runner that dies abruptly.

Executables: ``pkg="revqom"`` names map to ``python -m <module>`` (``REVQOM_NODE_MODULES``);
other packages resolve to ``<prefix>/lib/<pkg>/<exec>`` in the ament prefixes; a node
without ``pkg`` runs ``exec`` from PATH. ``executables`` overrides any of them.

Every node's stdout and stderr are streamed whatever its ``output`` attribute says (the
runner keeps no launch log file; rclpy nodes write their own logs under ``~/.ros/log``).
Exit status of a launch: 0 when every node ended by itself with 0, or with 0 / SIGINT
after being asked to stop by SIGINT; 1 otherwise.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TextIO

from revqom_nodes.launcher.file import parse_launch_file
from revqom_nodes.launcher.node import NodeSpec
from revqom_nodes.launcher.substitutions import LaunchError
from revqom_nodes.share import SOURCE_PACKAGE, ament_prefixes

logger = logging.getLogger(__name__)

REVQOM_NODE_MODULES: Mapping[str, str] = {
    "agent_node": "revqom_nodes.ros.agent_node",
    "fusion_node": "revqom_nodes.ros.fusion_node",
    "replay_node": "revqom_nodes.ros.replay_node",
    "recorder_node": "revqom_nodes.ros.recorder_node",
}
ExecutableMap = Mapping[tuple[str, str], Sequence[str]]

DEFAULT_SIGTERM_TIMEOUT_S = 5.0
DEFAULT_SIGKILL_TIMEOUT_S = 5.0
_SIGKILL_WAIT_S = 5.0  # how long a SIGKILLed group may take to disappear before giving up
_PR_SET_PDEATHSIG = 1
_CLEAN_AFTER_SIGINT = (0, -signal.SIGINT, 128 + signal.SIGINT)


def resolve_executable(
    package: str | None, executable: str, overrides: ExecutableMap | None = None
) -> list[str]:
    """The argv prefix that runs ``executable`` of ``package``; ``LaunchError`` if there is none.

    ``overrides`` maps ``(package, executable)`` (package ``""`` for a node without ``pkg``)
    to an argv prefix and wins over every other rule.
    """
    if overrides and (package or "", executable) in overrides:
        return list(overrides[(package or "", executable)])
    if package is None:
        found = shutil.which(executable)
        if found is None:
            raise LaunchError(f"executable '{executable}' not found on PATH")
        return [found]
    if package == SOURCE_PACKAGE and executable in REVQOM_NODE_MODULES:
        module = REVQOM_NODE_MODULES[executable]
        if importlib.util.find_spec(module) is None:
            raise LaunchError(f"node '{executable}' of package revqom runs module {module}: not installed")
        return [sys.executable, "-m", module]
    for prefix in ament_prefixes():
        candidate = prefix / "lib" / package / executable
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return [str(candidate)]
    known = f" (revqom nodes: {', '.join(REVQOM_NODE_MODULES)})" if package == SOURCE_PACKAGE else ""
    raise LaunchError(
        f"no executable '{executable}' in package '{package}'{known}: a pip-only install has only the "
        f"revqom nodes; searched lib/{package}/ in {', '.join(map(str, ament_prefixes()))}"
    )


def _death_signal_setter() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child die with its parent (Linux); resolved before forking."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def _group_alive(pgid: int) -> bool:
    """Whether any non-zombie process is left in process group ``pgid``."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


@dataclass
class _Process:
    spec: NodeSpec
    argv: list[str]
    popen: subprocess.Popen | None = None
    phase: str = "running"  # running -> SIGINT -> SIGTERM -> SIGKILL
    deadline: float = 0.0
    exit_phase: str | None = None
    threads: list[threading.Thread] = field(default_factory=list)

    @property
    def returncode(self) -> int | None:
        return None if self.exit_phase is None else self.popen.returncode

    def alive(self) -> bool:
        return self.popen is not None and (self.popen.poll() is None or _group_alive(self.popen.pid))

    def clean(self) -> bool:
        code = self.returncode
        return code == 0 or (self.exit_phase == "SIGINT" and code in _CLEAN_AFTER_SIGINT)


class LaunchRunner:
    """Starts node processes, streams their output, and shuts them all down.

    Use as a context manager (``start`` on enter, ``shutdown`` on exit), or call
    ``start``, then ``spin`` (until the launch ends) or ``wait_for_exit`` (one node).
    Call ``start`` from a thread that outlives the launch (the main thread): Linux ties
    the children's death signal to the thread that forked them.
    """

    def __init__(
        self,
        nodes: Sequence[NodeSpec],
        *,
        executables: ExecutableMap | None = None,
        sigterm_timeout_s: float = DEFAULT_SIGTERM_TIMEOUT_S,
        sigkill_timeout_s: float = DEFAULT_SIGKILL_TIMEOUT_S,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
    ) -> None:
        labels = [spec.label for spec in nodes]
        if len(set(labels)) != len(labels):
            raise LaunchError(f"node labels must be unique, got {labels}")
        self._processes: dict[str, _Process] = {}
        for spec in nodes:
            try:
                argv = resolve_executable(spec.package, spec.executable, executables)
            except LaunchError as error:
                raise LaunchError(f"{spec.source} [{spec.label}]: {error}") from None
            self._processes[spec.label] = _Process(spec, argv)
        self._sigterm_timeout_s = sigterm_timeout_s
        self._sigkill_timeout_s = sigkill_timeout_s
        self._stdout, self._stderr = stdout, stderr
        self._write_lock = threading.Lock()
        self._changed = threading.Event()
        self._shutdown_reason: str | None = None
        self._signals_received = 0
        self._parameters_dir: Path | None = None
        self._status: int | None = None

    @property
    def labels(self) -> list[str]:
        return list(self._processes)

    @property
    def returncodes(self) -> dict[str, int | None]:
        """Exit code of each node that has ended (negative: killed by that signal), else None."""
        return {label: p.returncode for label, p in self._processes.items()}

    @property
    def shutdown_reason(self) -> str | None:
        return self._shutdown_reason

    def __enter__(self) -> LaunchRunner:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    def start(self) -> None:
        """Start every node; on a failure, stop the ones already started and raise."""
        if self._parameters_dir is not None:
            raise RuntimeError("LaunchRunner.start() may be called once")
        self._parameters_dir = Path(tempfile.mkdtemp(prefix="revqom_launch_"))
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        preexec = _death_signal_setter()
        try:
            for process in self._processes.values():
                spec = process.spec
                argv = process.argv + spec.ros_command_line(self._parameters_dir)
                process.popen = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env={**env, **spec.env},
                    cwd=spec.cwd,
                    start_new_session=True,
                    preexec_fn=preexec,
                )
                logger.info("[%s]: process started with pid [%d]", spec.label, process.popen.pid)
        except (OSError, LaunchError) as error:
            self.shutdown()
            where = f"[{spec.label}] ({spec.source})"
            raise LaunchError(f"{where}: cannot start {process.argv}: {error}") from error
        for process in self._processes.values():  # threads only after every fork
            process.threads = [
                threading.Thread(target=self._pump, args=(process.popen.stdout, process.spec.label, False),
                                 daemon=True),
                threading.Thread(target=self._pump, args=(process.popen.stderr, process.spec.label, True),
                                 daemon=True),
                threading.Thread(target=self._watch, args=(process,), daemon=True),
            ]
            for thread in process.threads:
                thread.start()

    def _pump(self, pipe: IO[bytes], label: str, is_stderr: bool) -> None:
        with pipe:
            for raw in iter(pipe.readline, b""):
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                stream = (self._stderr or sys.stderr) if is_stderr else (self._stdout or sys.stdout)
                with self._write_lock:
                    try:
                        stream.write(f"[{label}] {line}\n")
                        stream.flush()
                    except (OSError, ValueError):
                        pass  # our own output is gone: keep draining the pipe

    def _watch(self, process: _Process) -> None:
        code = process.popen.wait()
        process.exit_phase = process.phase
        label, pid = process.spec.label, process.popen.pid
        if process.clean():
            logger.info("[%s]: process has finished cleanly [pid %d]", label, pid)
        else:
            logger.error("[%s]: process has died [pid %d, exit code %d, cmd '%s']",
                         label, pid, code, " ".join(process.popen.args))
        if process.spec.on_exit_shutdown and self._shutdown_reason is None:
            self._shutdown_reason = f"{label} exited (on_exit=shutdown)"
        self._changed.set()

    def request_shutdown(self, reason: str) -> None:
        """Ask ``spin`` to shut the launch down; safe from signal handlers and other threads."""
        if self._shutdown_reason is None:
            self._shutdown_reason = reason
        if reason.startswith("signal"):
            self._signals_received += 1

    def wait_for_exit(self, label: str, timeout_s: float | None = None) -> int | None:
        """Block until node ``label`` ends; its exit code, or None on timeout."""
        if label not in self._processes:
            raise KeyError(f"no node labelled '{label}' (labels: {', '.join(self._processes)})")
        process = self._processes[label]
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while process.exit_phase is None and process.popen is not None:
            if deadline is not None and time.monotonic() >= deadline:
                return None
            self._changed.wait(0.05)
            self._changed.clear()
        return process.returncode

    def spin(self) -> int:
        """Run until every node has ended or shutdown is requested, then shut down; exit status."""
        while self._shutdown_reason is None and any(p.exit_phase is None for p in self._processes.values()):
            self._changed.wait(0.1)
            self._changed.clear()
        return self.shutdown()

    def shutdown(self) -> int:
        """SIGINT, then SIGTERM, then SIGKILL to every node still running; the exit status."""
        if self._status is not None:
            return self._status
        if self._shutdown_reason is not None:
            logger.info("shutting down: %s", self._shutdown_reason)
        started = [p for p in self._processes.values() if p.popen is not None]
        for process in started:
            if process.alive():
                self._escalate(process, "SIGINT", self._sigterm(process))
        signals_before = self._signals_received  # each later Ctrl-C skips one grace period
        while True:
            alive = [p for p in started if p.alive()]
            if not alive:
                break
            now = time.monotonic()
            impatience = self._signals_received - signals_before
            for process in alive:
                forced = impatience >= {"SIGINT": 1, "SIGTERM": 2}.get(process.phase, 99)
                if now >= process.deadline or forced:
                    if process.phase == "SIGINT":
                        self._escalate(process, "SIGTERM", self._sigkill(process))
                    elif process.phase == "SIGTERM":
                        self._escalate(process, "SIGKILL", _SIGKILL_WAIT_S)
                    elif process.phase == "SIGKILL":
                        logger.error("[%s]: still alive after SIGKILL; giving up", process.spec.label)
                        process.phase = "abandoned"
            if all(p.phase == "abandoned" for p in alive):
                break
            time.sleep(0.02)
        for process in started:
            try:
                process.popen.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                logger.error("[%s]: pid %d could not be reaped", process.spec.label, process.popen.pid)
            for thread in process.threads:
                thread.join(timeout=1.0)
            if not process.threads:  # start() failed before the output threads ran
                process.popen.stdout.close()
                process.popen.stderr.close()
        if self._parameters_dir is not None:
            shutil.rmtree(self._parameters_dir, ignore_errors=True)
        self._status = 0 if all(p.clean() for p in started) else 1
        return self._status

    def _sigterm(self, process: _Process) -> float:
        override = process.spec.sigterm_timeout_s
        return self._sigterm_timeout_s if override is None else override

    def _sigkill(self, process: _Process) -> float:
        override = process.spec.sigkill_timeout_s
        return self._sigkill_timeout_s if override is None else override

    def _escalate(self, process: _Process, signal_name: str, timeout_s: float) -> None:
        process.phase = signal_name
        process.deadline = time.monotonic() + timeout_s
        if signal_name != "SIGINT":
            logger.warning("[%s]: sending %s", process.spec.label, signal_name)
        try:
            os.killpg(process.popen.pid, getattr(signal, signal_name))
        except (ProcessLookupError, PermissionError):
            pass  # the group ended meanwhile


@contextmanager
def signals_forwarded(runner: LaunchRunner) -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP request a shutdown while inside (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    names = [n for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n)]
    previous = {}
    for name in names:
        previous[name] = signal.signal(getattr(signal, name), lambda s, _f: runner.request_shutdown(
            f"signal {signal.Signals(s).name}"))
    try:
        yield
    finally:
        for name, handler in previous.items():
            signal.signal(getattr(signal, name), handler)


def run(nodes: Sequence[NodeSpec], **runner_options: object) -> int:
    """Start ``nodes``, run until they end, Ctrl-C or a node with ``on_exit="shutdown"`` ends.

    ``runner_options`` go to ``LaunchRunner``; returns the launch's exit status.
    """
    runner = LaunchRunner(nodes, **runner_options)  # type: ignore[arg-type]
    with signals_forwarded(runner):
        try:
            runner.start()
            return runner.spin()
        finally:
            runner.shutdown()


def launch(path: str | Path, arguments: Mapping[str, str] | None = None, **runner_options: object) -> int:
    """``parse_launch_file`` then ``run``: the whole of ``revqom launch FILE name:=value``."""
    return run(parse_launch_file(path, arguments), **runner_options)
