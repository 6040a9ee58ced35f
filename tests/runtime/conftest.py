"""Fixtures of the runtime tests: the tiny model and encoded frames made with it."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from revqom_nodes.codec.wire import Encoding
from revqom_nodes.runtime.encoder import AgentEncoder
from revqom_nodes.runtime.frames import AgentFrame
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
def make_slices(tiny_model: RuntimeModel, sweeps: dict[str, np.ndarray]) -> Callable[..., list[AgentFrame]]:
    """``make_slices(agent_id, stamp_ms, T=None, encode_with=PACKED, slice_bytes=0, interleave=1,
    **overrides)`` -> the AgentFrames of one sweep's messages (one whole-map message for
    slice_bytes 0).

    Agents other than vehicle and infrastructure send the vehicle's sweep.
    """
    cache: dict[tuple[str, Encoding, int, int], object] = {}

    def make(
        agent_id: str = "vehicle",
        stamp_ms: float = 1000.0,
        T: np.ndarray | None = None,
        encode_with: Encoding = Encoding.PACKED,
        slice_bytes: int = 0,
        interleave: int = 1,
        **overrides: object,
    ) -> list[AgentFrame]:
        key = (agent_id if agent_id in sweeps else "vehicle", encode_with, slice_bytes, interleave)
        if key not in cache:
            cache[key] = AgentEncoder(tiny_model, encode_with, slice_bytes, interleave).encode(sweeps[key[0]])
        sweep = cache[key]
        height, width = tiny_model.grid.bev_shape
        frames = []
        for index, piece in enumerate(sweep.slices):
            fields = dict(
                agent_id=agent_id,
                role=0 if agent_id == "vehicle" else 1,
                sequence=int(stamp_ms),
                stamp_ns=int(stamp_ms * MS),
                frame_id=f"{agent_id}_lidar",
                T_world_from_lidar=np.eye(4) if T is None else T,
                height=height,
                width=width,
                cell_size_m=tiny_model.grid.cell_size_m,
                codebook_size=tiny_model.settings.codebook_size,
                num_quantizers=tiny_model.settings.num_quantizers,
                codebook_id=tiny_model.codebook_id,
                encoding=int(piece.encoding),
                payload=piece.payload,
                slice_index=index,
                num_slices=len(sweep.slices),
                first_cell=piece.first_cell,
                num_cells=piece.num_cells,
                interleave=interleave,
            )
            fields.update(overrides)
            frames.append(AgentFrame(**fields))
        return frames

    return make


@pytest.fixture
def make_frame(make_slices: Callable[..., list[AgentFrame]]) -> Callable[..., AgentFrame]:
    """``make_frame(agent_id, stamp_ms, T=None, encode_with=PACKED, **overrides) -> AgentFrame``:
    one message carrying the whole map."""

    def make(*args: object, **kwargs: object) -> AgentFrame:
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
