"""Shared pytest fixtures: isolated ROS 2 environments for multi-process tests."""

from __future__ import annotations

import itertools
import os

import pytest

_domain_ids = itertools.count((os.getpid() % 50) * 4 + 10)


@pytest.fixture
def ros_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment for ROS 2 processes: a fresh DDS domain, discovery on loopback only.

    The same variables are set in this process so that an in-process rclpy
    participant joins the same domain as the child processes.
    """
    pytest.importorskip("rclpy")
    env = {
        "ROS_DOMAIN_ID": str(next(_domain_ids) % 200 + 1),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return dict(os.environ)
