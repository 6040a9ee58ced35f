"""``revqom bench <benchmark>``: one sub-verb per area, each printing one JSON object.

An area adds a benchmark by writing a module with ``register(subparsers)`` that calls
``subparsers.add_parser("<name>")`` and ``set_defaults(run=handler)``, and by adding the
module path to ``BENCH_MODULES`` (one line). Heavy imports stay inside the handlers.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
from typing import Any

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


def machine() -> dict[str, Any]:
    """What ran a benchmark, for comparing figures across machines: the CPU (its name, family and
    model from /proc/cpuinfo where there is one, whether it has AVX-512), the logical CPUs, the
    load average at the call and the torch version; speeds of the same code differed twofold
    between machines of one kind here."""
    import torch

    cpu = {"name": platform.processor() or platform.machine(), "family": None, "model": None, "avx512": None}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            first_cpu = f.read().split("\n\n")[0].splitlines()
        fields = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in first_cpu if ":" in line)}
        cpu = {"name": fields.get("model name", cpu["name"]), "family": fields.get("cpu family"),
               "model": fields.get("model"), "avx512": "avx512f" in fields.get("flags", "").split()}
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "load_average": load and [round(v, 2) for v in load],
            "torch": torch.__version__,
            "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="run a benchmark and print its results as one JSON object")
    benchmarks = parser.add_subparsers(title="benchmarks", metavar="BENCHMARK")
    for name in BENCH_MODULES:
        importlib.import_module(name).register(benchmarks)

    def _help(args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(run=_help)
