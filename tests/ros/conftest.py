"""Fixtures of the ROS tests: the runtime tests' tiny model and sweeps."""

from tests.runtime.conftest import sweeps, tiny_model

__all__ = ["sweeps", "tiny_model"]
