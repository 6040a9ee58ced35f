"""Fixtures of the runtime tests: the tiny model and encoded frames made with it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest

from revqom_nodes.codec.wire import Encoding
from revqom_nodes.runtime.encoder import AgentEncoder, EncodedSweep
from revqom_nodes.runtime.frames import ReceivedSlice
from revqom_nodes.runtime.inbox import Inbox
from revqom_nodes.runtime.model import RuntimeModel
from revqom_nodes.runtime.validation import Expectations
from tests.runtime.tiny_model import build_tiny_model, tiny_cloud

MS = 1_000_000


@pytest.fixture(scope="session")
def tiny_model() -> RuntimeModel:
    return build_tiny_model()


@pytest.fixture(scope="session")
def sweeps() -> dict[str, np.ndarray]:
    return {"vehicle": tiny_cloud(1), "infrastructure": tiny_cloud(2, height_m=6.0)}


@pytest.fixture
def make_slices(
    tiny_model: RuntimeModel, sweeps: dict[str, np.ndarray]
) -> Callable[..., list[ReceivedSlice]]:
    """``make_slices(agent_id, stamp_ms, T=None, encode_with=PACKED, slice_bytes=0, interleave=1,
    **overrides)`` -> the ReceivedSlices of one sweep's messages (one whole-map message for
    slice_bytes 0), each with the fields in ``overrides`` replaced.

    Agents other than vehicle and infrastructure send the vehicle's sweep.
    """
    cache: dict[tuple[str, Encoding, int, int], tuple[AgentEncoder, EncodedSweep]] = {}

    def make(
        agent_id: str = "vehicle",
        stamp_ms: float = 1000.0,
        T: np.ndarray | None = None,
        encode_with: Encoding = Encoding.PACKED,
        slice_bytes: int = 0,
        interleave: int = 1,
        **overrides: object,
    ) -> list[ReceivedSlice]:
        key = (agent_id if agent_id in sweeps else "vehicle", encode_with, slice_bytes, interleave)
        if key not in cache:
            encoder = AgentEncoder(tiny_model, encode_with, slice_bytes, interleave)
            cache[key] = encoder, encoder.encode(sweeps[key[0]])
        encoder, sweep = cache[key]
        messages = encoder.messages(
            sweep.slices,
            agent_id=agent_id,
            T_world_from_lidar=np.eye(4) if T is None else T,
            stamp_ns=int(stamp_ms * MS),
            sequence=int(stamp_ms),
            role=0 if agent_id == "vehicle" else 1,
            frame_id=f"{agent_id}_lidar",
        )
        return [replace(message, **overrides) for message in messages]

    return make


@pytest.fixture
def make_frame(make_slices: Callable[..., list[ReceivedSlice]]) -> Callable[..., ReceivedSlice]:
    """``make_frame(agent_id, stamp_ms, T=None, encode_with=PACKED, **overrides) -> ReceivedSlice``:
    one message carrying the whole map."""

    def make(*args: object, **kwargs: object) -> ReceivedSlice:
        (frame,) = make_slices(*args, **kwargs)
        return frame

    return make


class FakeClock:
    """The inbox's clock, set by hand: ``clock.now_ns = ...``."""

    def __init__(self) -> None:
        self.now_ns = 0

    def __call__(self) -> int:
        return self.now_ns


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_inbox(tiny_model: RuntimeModel, clock: FakeClock) -> Callable[..., Inbox]:
    """``make_inbox(**overrides) -> Inbox`` of the tiny model: vehicle (ego) and infrastructure,
    150 ms max age, 200 ms sync wait, 3 frames per agent, the fake clock."""

    def make(**overrides: object) -> Inbox:
        settings = dict(agent_ids=["vehicle", "infrastructure"], ego_agent_id="vehicle", max_age_ms=150,
                        sync_wait_ms=200, buffer_size=3, clock_ns=clock)
        return Inbox(Expectations.of(tiny_model), **{**settings, **overrides})

    return make
