"""Fixtures of the trust tests: one key directory (CA, a vehicle, an infrastructure unit)
valid from 2021 to 2031, and slice fields stamped inside that period."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest

from revqom_nodes.trust.canonical import SliceFields
from revqom_nodes.trust.certificates import Role
from revqom_nodes.trust.keydir import KeyDirectory, init_ca, issue_agent

NOT_BEFORE = dt.datetime(2021, 1, 1, tzinfo=dt.timezone.utc)
STAMP_SEC = 1_626_155_000  # July 2021, like the synthetic scenarios


def make_keys(root: Path, *, ca_days: float = 3650, agent_days: float = 3000) -> KeyDirectory:
    keys = KeyDirectory(root)
    init_ca(keys, name="test CA", not_before=NOT_BEFORE, days=ca_days, force=False)
    for agent_id, role in (("vehicle", Role.VEHICLE), ("infrastructure", Role.INFRASTRUCTURE)):
        issue_agent(keys, agent_id=agent_id, role=role, not_before=NOT_BEFORE, days=agent_days, force=False)
    return keys


def make_fields(**changes: object) -> SliceFields:
    """A small vehicle slice (the PACKED example of docs/wire-format.md), with ``changes``."""
    fields = SliceFields(
        stamp_sec=STAMP_SEC,
        stamp_nanosec=100_000_000,
        frame_id="vehicle_lidar",
        agent_id="vehicle",
        role=Role.VEHICLE,
        sequence=42,
        position=(12.5, -3.25, 1.75),
        orientation=(0.0, 0.0, 0.6, 0.8),
        height=1,
        width=3,
        cell_size_m=0.8,
        codebook_size=5,
        num_quantizers=2,
        codebook_id="ab" * 32,
        encoding=0,
        slice_index=0,
        num_slices=1,
        first_cell=0,
        num_cells=3,
        interleave=1,
        payload=bytes.fromhex("8194c0"),
    )
    return dataclasses.replace(fields, **changes)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyDirectory:
    return make_keys(tmp_path_factory.mktemp("keys"))
