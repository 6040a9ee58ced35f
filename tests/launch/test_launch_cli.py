"""``revqom launch``: argument syntax, file look-up, and the no-start modes."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from revqom_nodes.launcher import cli as launch_cli
from revqom_nodes.launcher.substitutions import LaunchError

EXAMPLE = Path(__file__).parent / "fixtures" / "example.launch.xml"


def revqom_launch(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="revqom")
    launch_cli.register(parser.add_subparsers())
    args = parser.parse_args(["launch", *argv])
    return args.run(args)


def test_launch_arguments_use_ros2_syntax() -> None:
    assert launch_cli.split_launch_arguments(["a:=1", "b:=x:=y", "c:="]) == {"a": "1", "b": "x:=y", "c": ""}
    with pytest.raises(LaunchError, match="name:=value, got 'a=1'"):
        launch_cli.split_launch_arguments(["a=1"])


def test_show_args_and_print_start_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert revqom_launch(str(EXAMPLE), "--show-args") == 0
    assert "bag (required): ROS 2 bag to replay" in capsys.readouterr().out
    assert revqom_launch(str(EXAMPLE), "bag:=/b.db3", "use_infrastructure:=false", "--print") == 0
    out = capsys.readouterr().out
    assert "[vehicle/agent] revqom agent_node" in out and "infrastructure/agent" not in out
    assert "on_exit: shutdown" in out


def test_errors_exit_with_status_2(caplog: pytest.LogCaptureFixture) -> None:
    assert revqom_launch(str(EXAMPLE)) == 2
    assert "missing required launch argument(s): bag" in caplog.text
    assert revqom_launch("revqom", "no_such.launch.xml") == 2  # the `ros2 launch PACKAGE FILE` form
    assert "launch file 'no_such.launch.xml' not found in" in caplog.text
