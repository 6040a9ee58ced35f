"""What a benchmark ran on: ``machine()`` for the ``machine`` entry of ``revqom bench`` JSON.

The same code ran twice as fast on one development machine of this project as on another of the
same kind (a Zen 4 CPU with AVX-512 against an older one), so a timing means little without it.
"""

from __future__ import annotations

import os
import platform
from typing import Any


def machine() -> dict[str, Any]:
    """The CPU (its name, family and model from /proc/cpuinfo where there is one, whether it has
    AVX-512), the logical CPUs, the load average at the call, the torch version and the CUDA
    device, if any."""
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
