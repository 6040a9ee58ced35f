"""Per-stage timings (milliseconds): the clock, summaries; and a per-key rate limiter for log lines."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def now_ms(device: torch.device, *, wait: bool = True) -> float:
    """Wall-clock milliseconds, once the work queued on ``device`` is done (CUDA runs asynchronously)
    unless ``wait`` is False: then the host does not wait, and on CUDA the stamp falls when the
    work was queued, not done."""
    if wait and device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)
    return time.perf_counter() * 1e3


def summarize_ms(values: Iterable[float]) -> dict[str, float | int | None]:
    """Timings in ms -> {"count", "p50", "p95", "mean", "min", "max"} (None values when empty)."""
    data = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if data.size == 0:
        return {"count": 0, "p50": None, "p95": None, "mean": None, "min": None, "max": None}
    return {
        "count": int(data.size),
        "p50": round(float(np.percentile(data, 50)), 3),
        "p95": round(float(np.percentile(data, 95)), 3),
        "mean": round(float(data.mean()), 3),
        "min": round(float(data.min()), 3),
        "max": round(float(data.max()), 3),
    }


class RateLimiter:
    """``allow(key)`` is True at most once per ``interval_s`` for each key (e.g. a reject reason).

    Keys come from a fixed vocabulary (reasons, error kinds), so the table stays small.
    """

    def __init__(self, interval_s: float, clock_s: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self._clock_s = clock_s
        self._last: dict[str, float] = {}
        self.suppressed: dict[str, int] = {}

    def allow(self, key: str) -> bool:
        now = self._clock_s()
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            self.suppressed[key] = self.suppressed.get(key, 0) + 1
            return False
        self._last[key] = now
        return True
