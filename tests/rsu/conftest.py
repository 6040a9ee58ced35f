"""Fixtures of the roadside unit tests: a DDS domain of their own on loopback, the tiny model."""

from __future__ import annotations

import os

import pytest

from tests.runtime.conftest import sweeps, tiny_model

__all__ = ["dds_env", "sweeps", "tiny_model"]

DDS_DOMAINS = range(215, 233)  # 232: the largest domain id of the standard port mapping


@pytest.fixture
def dds_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """ROS_DOMAIN_ID (a domain of this test process among 215..232, above the ones
    tests/conftest.py's ``ros_env`` hands out, 1..200) and loopback-only discovery, here and for
    child processes."""
    domain_id = DDS_DOMAINS[0] + os.getpid() % len(DDS_DOMAINS)
    values = {"ROS_DOMAIN_ID": str(domain_id), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("CYCLONEDDS_URI", raising=False)
    return dict(os.environ)
