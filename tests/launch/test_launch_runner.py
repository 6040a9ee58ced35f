"""The runner starts nodes as processes, prefixes their output, and leaves none behind.

Nodes are tiny Python scripts (not ROS) mapped in through ``executables``.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from revqom_nodes.launcher.node import NodeSpec
from revqom_nodes.launcher.runner import LaunchRunner, resolve_executable
from revqom_nodes.launcher.substitutions import LaunchError

FIXTURES = Path(__file__).parent / "fixtures"
REPO_ROOT = Path(__file__).resolve().parents[2]

DUMMY_NODE = textwrap.dedent("""
    import json, os, signal, subprocess, sys, time
    mode = sys.argv[1]
    def on_sigint(signum, frame):
        print("got SIGINT", flush=True)
        sys.exit(0)
    signal.signal(signal.SIGINT, signal.SIG_IGN if mode == "ignore-sigint" else on_sigint)
    if mode in ("grandchild", "exit-leaving-grandchild"):
        child = subprocess.Popen(["sleep", "60"])
        print(f"grandchild {child.pid}", flush=True)
    print(f"ready {os.getpid()}", flush=True)
    print("to stderr", file=sys.stderr, flush=True)
    print("argv " + json.dumps(sys.argv[2:]), flush=True)
    if mode == "exit-leaving-grandchild":
        os._exit(0)
    if mode == "exit-soon":
        time.sleep(0.3)
        sys.exit(0)
    while True:
        time.sleep(0.05)
""")


@pytest.fixture
def dummy(tmp_path: Path) -> Callable[[str], list[str]]:
    script = tmp_path / "dummy_node.py"
    script.write_text(DUMMY_NODE)
    return lambda mode: [sys.executable, str(script), mode]


def spec(label: str, **fields) -> NodeSpec:
    return NodeSpec(**{"label": label, "package": "test_pkg", "executable": label, "name": None,
                       "namespace": None, **fields})


def wait_until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def pids(text: str, word: str) -> list[int]:
    return [int(line.split()[-1]) for line in text.splitlines() if f"] {word} " in line]


def test_output_is_prefixed_sigint_is_forwarded_and_nothing_is_left(dummy) -> None:
    out, err = io.StringIO(), io.StringIO()
    executables = {("test_pkg", "a"): dummy("grandchild"), ("test_pkg", "b"): dummy("forever")}
    nodes = [spec("a", name="talker", namespace="/ns", remappings=[("x", "y")]), spec("b")]
    with LaunchRunner(nodes, executables=executables, stdout=out, stderr=err) as runner:
        wait_until(lambda: len(pids(out.getvalue(), "ready")) == 2)
    assert runner.shutdown() == 0
    text = out.getvalue()
    assert "[a] got SIGINT" in text and "[b] got SIGINT" in text
    assert "[a] to stderr" in err.getvalue() and "to stderr" not in text
    (argv_line,) = [line for line in text.splitlines() if line.startswith("[a] argv ")]
    argv_a = json.loads(argv_line.removeprefix("[a] argv "))
    assert argv_a == ["--ros-args", "-r", "__node:=talker", "-r", "__ns:=/ns", "-r", "x:=y"]
    children = pids(text, "ready") + pids(text, "grandchild")
    assert len(children) == 3
    wait_until(lambda: all(gone(pid) for pid in children), 3.0)
    assert runner.returncodes == {"a": 0, "b": 0}


def test_node_with_on_exit_shutdown_ends_the_launch(dummy) -> None:
    out = io.StringIO()
    executables = {("test_pkg", "replay"): dummy("exit-soon"), ("test_pkg", "fusion"): dummy("forever")}
    runner = LaunchRunner([spec("replay", on_exit_shutdown=True), spec("fusion")], executables=executables,
                          stdout=out, stderr=io.StringIO())
    with runner:
        started = time.monotonic()
        assert runner.spin() == 0
        assert time.monotonic() - started < 5.0
    assert "replay exited" in runner.shutdown_reason
    assert "[fusion] got SIGINT" in out.getvalue()
    assert "[replay] got SIGINT" not in out.getvalue()


def test_node_ignoring_sigint_gets_sigterm_and_fails_the_launch(dummy) -> None:
    executables = {("test_pkg", "stubborn"): dummy("ignore-sigint")}
    out = io.StringIO()
    runner = LaunchRunner([spec("stubborn", sigterm_timeout_s=0.3)], executables=executables, stdout=out,
                          stderr=io.StringIO())
    with runner:
        wait_until(lambda: "ready" in out.getvalue())
        started = time.monotonic()
        assert runner.shutdown() == 1
        assert 0.3 <= time.monotonic() - started < 3.0
    assert runner.returncodes == {"stubborn": -signal.SIGTERM}


def test_group_members_left_by_an_ended_node_are_stopped(dummy) -> None:
    out = io.StringIO()
    executables = {("test_pkg", "parent"): dummy("exit-leaving-grandchild")}
    runner = LaunchRunner([spec("parent")], executables=executables, stdout=out, stderr=io.StringIO())
    with runner:
        assert runner.wait_for_exit("parent", timeout_s=10.0) == 0
        wait_until(lambda: "[parent] argv" in out.getvalue())  # output may trail the exit
        (grandchild,) = pids(out.getvalue(), "grandchild")
        assert not gone(grandchild)
        assert runner.spin() == 0
    wait_until(lambda: gone(grandchild), 3.0)


def test_unknown_executables_are_refused_before_anything_starts() -> None:
    with pytest.raises(LaunchError, match="no executable 'talker' in package 'demo_nodes_py'"):
        LaunchRunner([NodeSpec("t", "demo_nodes_py", "talker", None, None)])
    with pytest.raises(LaunchError, match="revqom nodes: agent_node"):
        resolve_executable("revqom", "no_such_node")
    assert resolve_executable("revqom", "agent_node", {("revqom", "agent_node"): ["x"]}) == ["x"]


@pytest.fixture
def launch_in_subprocess(tmp_path: Path, dummy) -> Iterator[Callable[[str], subprocess.Popen]]:
    """Starts a runner process on the example fixture, every node mapped to the dummy in ``mode``."""
    started: list[subprocess.Popen] = []

    def start(mode: str) -> subprocess.Popen:
        script = tmp_path / "run_launch.py"
        mapping = {f"revqom/{name}": dummy(mode) for name in ("agent_node", "fusion_node", "replay_node")}
        script.write_text(textwrap.dedent(f"""
            import json, logging, sys
            from revqom_nodes.launcher.runner import launch
            logging.basicConfig(level=logging.INFO)
            mapping = {{tuple(k.split("/")): v for k, v in json.loads({json.dumps(mapping)!r}).items()}}
            sys.exit(launch({str(FIXTURES / "example.launch.xml")!r}, {{"bag": "b"}}, executables=mapping))
        """))
        python_path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONPATH": python_path, "TMPDIR": str(tmp_path)}
        process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, env=env, text=True)
        started.append(process)
        return process

    yield start
    for process in started:  # a failed test must not leave a launch running
        process.kill()
        process.wait(timeout=5)
        process.stdout.close()
        process.stderr.close()


def finish(process: subprocess.Popen) -> tuple[str, str]:
    """The rest of the runner's output (not ``communicate``: it skips what readline buffered)."""
    out, err = process.stdout.read(), process.stderr.read()
    process.wait(timeout=15)
    return out, err


def read_ready_pids(process: subprocess.Popen, count: int) -> tuple[list[int], list[str]]:
    lines, found = [], []
    while len(found) < count:
        line = process.stdout.readline()
        assert line, f"runner ended early: {process.stderr.read()}"
        lines.append(line)
        found += pids(line, "ready")
    return found, lines


def test_ctrl_c_on_the_runner_stops_every_node(launch_in_subprocess) -> None:
    process = launch_in_subprocess("forever")
    children, lines = read_ready_pids(process, 4)
    process.send_signal(signal.SIGINT)
    out, err = finish(process)
    assert process.returncode == 0, err
    text = "".join(lines) + out
    for label in ("vehicle/agent", "infrastructure/agent", "fusion", "replay"):
        assert f"[{label}] got SIGINT" in text
    assert "process has finished cleanly" in err
    wait_until(lambda: all(gone(pid) for pid in children), 3.0)


def test_second_ctrl_c_skips_the_grace_period(launch_in_subprocess) -> None:
    process = launch_in_subprocess("ignore-sigint")
    read_ready_pids(process, 4)
    process.send_signal(signal.SIGINT)
    time.sleep(0.5)
    started = time.monotonic()
    process.send_signal(signal.SIGINT)
    _, err = finish(process)
    assert time.monotonic() - started < 3.0  # not the 5 s default grace
    assert process.returncode == 1 and "sending SIGTERM" in err


def test_children_die_with_a_killed_runner(launch_in_subprocess) -> None:
    process = launch_in_subprocess("forever")
    children, _ = read_ready_pids(process, 4)
    process.kill()
    process.wait(timeout=5)
    wait_until(lambda: all(gone(pid) for pid in children), 3.0)
