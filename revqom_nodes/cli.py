"""The ``revqom`` command: one verb per job, each registered by the module that owns it.

Every module listed in ``COMMAND_MODULES`` exposes ``register(subparsers)``, which
adds its verb with ``set_defaults(run=handler)``; ``handler(args) -> int`` is the
exit status. Modules import their heavy dependencies (torch, rclpy) inside the
handler so that ``revqom --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from revqom_nodes import __version__

COMMAND_MODULES: tuple[str, ...] = (
    "revqom_nodes.info",
    "revqom_nodes.launcher.cli",
    "revqom_nodes.data.cli",
    "revqom_nodes.bench",
    "revqom_nodes.training.cli",
    "revqom_nodes.evaluation.cli",
    "revqom_nodes.scenario.replay",
    "revqom_nodes.scenario.demo",
    "revqom_nodes.rsu.cli",
    "revqom_nodes.trust.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="revqom",
        description="ReVQom cooperative perception: codec, data, training, evaluation and ROS 2 runtime.",
    )
    parser.add_argument("--version", action="version", version=f"revqom {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
