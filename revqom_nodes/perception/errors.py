"""The one exception type of the perception package."""

from __future__ import annotations


class PerceptionError(ValueError):
    """Bad configuration or bad input to a perception stage (shapes, ranges, modes)."""
