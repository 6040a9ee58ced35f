"""Fixtures of the roadside unit tests: a DDS domain of their own on loopback, the tiny model."""

from __future__ import annotations

import os

import pytest

from tests.runtime.conftest import sweeps, tiny_model

__all__ = ["dds_env", "sweeps", "tiny_model"]


@pytest.fixture
def dds_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """ROS_DOMAIN_ID (a domain of this test process, away from tests/conftest.py's ``ros_env``
    ones) and loopback-only discovery, here and for child processes."""
    values = {"ROS_DOMAIN_ID": str((os.getpid() % 50) * 4 + 11), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("CYCLONEDDS_URI", raising=False)
    return dict(os.environ)
