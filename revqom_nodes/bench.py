"""``revqom bench <benchmark>``: one sub-verb per area, each printing one JSON object.

An area adds a benchmark by writing a module with ``register(subparsers)`` that calls
``subparsers.add_parser("<name>")`` and ``set_defaults(run=handler)``, and by adding the
module path to ``BENCH_MODULES`` (one line). Heavy imports stay inside the handlers.
"""

from __future__ import annotations

import argparse
import importlib

BENCH_MODULES: tuple[str, ...] = (
    "revqom_nodes.codec.bench",
    "revqom_nodes.perception.bench",
    "revqom_nodes.evaluation.parity",
    "revqom_nodes.evaluation.bench_wire",
    "revqom_nodes.scenario.bench_pipeline",
    "revqom_nodes.scenario.bench_loss",
    "revqom_nodes.scenario.bench_attack",
    "revqom_nodes.scenario.bench_discovery",
    "revqom_nodes.trust.bench",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="run a benchmark and print its results as one JSON object")
    benchmarks = parser.add_subparsers(title="benchmarks", metavar="BENCHMARK")
    for name in BENCH_MODULES:
        importlib.import_module(name).register(benchmarks)

    def _help(args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(run=_help)
