"""``revqom replay BAG [--rate R] [--loop] [--start-offset S]``: the replay node, from the shell.

Runs ``replay_node`` in this process with the given parameters (the same node the launch
files start) and returns when the bag ends (exit status 0) or on Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging

from revqom_nodes.defaults import node_defaults

log = logging.getLogger(__name__)


def _run(args: argparse.Namespace) -> int:
    from revqom_nodes.ros.replay_node import main

    given = {  # what the user set; the rest keeps config/replay.param.yaml's defaults
        "replay.rate": args.rate,
        "replay.loop": "true" if args.loop else None,
        "replay.start_offset_s": args.start_offset,
        "replay.exit_delay_s": args.exit_delay,
    }
    ros_args = ["--ros-args", "-p", f"bag.path:={args.bag}"]
    for name, value in given.items():
        if value is not None:
            ros_args += ["-p", f"{name}:={float(value) if isinstance(value, (int, float)) else value}"]
    if args.wait_for_subscribers:
        ros_args += ["-p", f"replay.wait_for_subscribers:=[{','.join(args.wait_for_subscribers)}]"]
    return main(["revqom_replay", *ros_args])


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "replay",
        help="play a bag from `revqom data to-bag` with its original timing",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("bag", help="rosbag2 folder")
    defaults = node_defaults("replay")
    parser.add_argument(
        "--rate", type=float, help=f"speed factor (0.5 = half speed; default {defaults['replay.rate']:g})"
    )
    parser.add_argument("--loop", action="store_true", help="start over at the end, time going on")
    parser.add_argument(
        "--start-offset", type=float, metavar="S",
        help=f"skip the first S seconds (default {defaults['replay.start_offset_s']:g})",
    )
    parser.add_argument(
        "--exit-delay", type=float, metavar="S",
        help=f"stay up S seconds after the last message (default {defaults['replay.exit_delay_s']:g})",
    )
    parser.add_argument(
        "--wait-for-subscribers",
        nargs="+",
        metavar="TOPIC",
        default=[],
        help="start playing once each TOPIC has a subscriber (e.g. /vehicle/lidar/points)",
    )
    parser.set_defaults(run=_run)
