"""The one exception type of the evaluation package."""

from __future__ import annotations


class EvaluationError(ValueError):
    """Malformed predictions, ground truth or settings given to the evaluation."""
