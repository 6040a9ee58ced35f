"""``revqom launch FILE [name:=value ...]``: run a ROS 2 XML launch file without ``ros2 launch``.

FILE is a path, or a file name in ``$(find-pkg-share revqom)/launch/``; the ``ros2 launch``
form ``revqom launch PACKAGE FILE ...`` works too. Exit status: the launch's (0 clean,
1 a node failed or had to be killed), 2 for a launch file or argument error.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def split_launch_arguments(tokens: list[str]) -> dict[str, str]:
    """``["a:=1", "b:=x"]`` -> ``{"a": "1", "b": "x"}``; anything else is a ``LaunchError``."""
    from revqom_nodes.launcher.substitutions import LaunchError

    arguments = {}
    for token in tokens:
        name, separator, value = token.partition(":=")
        if not separator or not name:
            raise LaunchError(f"launch arguments are written name:=value, got '{token}'")
        arguments[name] = value
    return arguments


def _resolve(file_or_package: str, rest: list[str]) -> tuple[Path, list[str]]:
    from revqom_nodes.launcher.file import find_launch_file

    if rest and ":=" not in rest[0] and not Path(file_or_package).is_file():
        return find_launch_file(rest[0], package=file_or_package), rest[1:]
    return find_launch_file(file_or_package), rest


def _run(args: argparse.Namespace) -> int:
    from revqom_nodes.launcher.elements import declared_arguments, format_arguments, load_xml
    from revqom_nodes.launcher.file import parse_launch_file
    from revqom_nodes.launcher.runner import run
    from revqom_nodes.launcher.substitutions import LaunchError

    try:
        path, rest = _resolve(args.launch_file, args.launch_arguments)
        if args.show_args:
            print(f"Arguments of {path}:\n{format_arguments(declared_arguments(load_xml(path)))}")
            return 0
        nodes = parse_launch_file(path, split_launch_arguments(rest))
        if args.print_nodes:
            print("\n".join(spec.describe() for spec in nodes))
            return 0
        timeouts = {"sigterm_timeout_s": args.sigterm_timeout, "sigkill_timeout_s": args.sigkill_timeout}
        return run(nodes, **{key: value for key, value in timeouts.items() if value is not None})
    except LaunchError as error:
        logger.error("%s", error)
        return 2


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "launch",
        help="run a ROS 2 XML launch file (for installs without `ros2 launch`)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("launch_file", metavar="FILE", help="launch file path or name (or PACKAGE FILE)")
    parser.add_argument("launch_arguments", nargs="*", metavar="name:=value", help="launch arguments")
    parser.add_argument("-s", "--show-args", action="store_true", help="list the file's arguments and exit")
    parser.add_argument("--print", dest="print_nodes", action="store_true",
                        help="print the evaluated nodes and exit without starting them")
    parser.add_argument("--sigterm-timeout", type=float, metavar="S",
                        help="seconds from SIGINT to SIGTERM at shutdown (default 5)")
    parser.add_argument("--sigkill-timeout", type=float, metavar="S",
                        help="seconds from SIGTERM to SIGKILL at shutdown (default 5)")
    parser.set_defaults(run=_run)
