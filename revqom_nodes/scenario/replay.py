"""``revqom replay BAG [--rate R] [--loop] [--start-offset S]``: the replay node, from the shell.

Runs ``replay_node`` in this process with the given parameters (the same node the launch
files start) and returns when the bag ends (exit status 0) or on Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def _run(args: argparse.Namespace) -> int:
    from revqom_nodes.ros.replay_node import main

    ros_args = [
        "--ros-args",
        "-p",
        f"bag.path:={args.bag}",
        "-p",
        f"replay.rate:={float(args.rate)}",
        "-p",
        f"replay.loop:={'true' if args.loop else 'false'}",
        "-p",
        f"replay.start_offset_s:={float(args.start_offset)}",
        "-p",
        f"replay.exit_delay_s:={float(args.exit_delay)}",
    ]
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
    parser.add_argument("--rate", type=float, default=1.0, help="speed factor (0.5 = half speed)")
    parser.add_argument("--loop", action="store_true", help="start over at the end")
    parser.add_argument(
        "--start-offset", type=float, default=0.0, metavar="S", help="skip the first S seconds"
    )
    parser.add_argument(
        "--exit-delay", type=float, default=0.0, metavar="S", help="stay up S seconds after the last message"
    )
    parser.add_argument(
        "--wait-for-subscribers",
        nargs="+",
        metavar="TOPIC",
        default=[],
        help="start playing once each TOPIC has a subscriber (e.g. /vehicle/lidar/points)",
    )
    parser.set_defaults(run=_run)
