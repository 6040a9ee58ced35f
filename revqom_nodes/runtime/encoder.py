"""``AgentEncoder``: one agent's sweep -> the payloads of its EncodedBEV messages.

Stages (each timed): voxelize + sparse backbone -> BEV map (1, C, H, W) ("bev"), bottleneck +
residual VQ -> indices (1, Q, H, W) ("quantize"), wire format cut into slices of at most
``slice_bytes`` payload bytes each -> bytes ("pack"; ``slice_bytes`` 0: the whole map in one
slice). Entropy coding uses the best model the file has: CONTEXT when its codec state holds
context tables, else ENTROPY (each slice falls back to PACKED when that is not smaller).
Every agent runs this, the ego included: its own map goes through the codec too, as in
training. ``messages`` gives what a receiver gets from the slices, without ROS (the fields
``ros.conversions.slice_to_encoded_bev`` writes), signed when given a signer
(``runtime/security.py``): the agent node publishes them, ``revqom eval`` and the benches feed
them to the receiver's validation and ``FusionEngine`` as the fusion node does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from revqom_nodes.codec.errors import WireFormatError
from revqom_nodes.codec.slices import (
    Slice,
    SliceError,
    check_interleave,
    cut_slices,
    packed_cells_per_slice,
)
from revqom_nodes.codec.wire import Encoding
from revqom_nodes.runtime.errors import RuntimeConfigError
from revqom_nodes.runtime.frames import ReceivedSlice, pose_fields
from revqom_nodes.runtime.latency import now_ms
from revqom_nodes.runtime.model import RuntimeModel
from revqom_nodes.runtime.security import sign_slice
from revqom_nodes.trust import Signer

ENCODINGS: dict[str, Encoding] = {"packed": Encoding.PACKED, "entropy": Encoding.ENTROPY}


def parse_encoding(name: str) -> Encoding:
    """``packed`` or ``entropy`` -> Encoding; RuntimeConfigError listing the valid names."""
    try:
        return ENCODINGS[str(name).strip().lower()]
    except KeyError:
        raise RuntimeConfigError(f"unknown encoding {name!r}; valid: {list(ENCODINGS)}") from None


class EncodedSweep(NamedTuple):
    """What the agent publishes for one sweep, with the time each stage took (milliseconds)."""

    slices: list[Slice]  # in the cell order of ``interleave``, covering the map once; one message each
    indices: np.ndarray  # (Q, H, W) int64
    bev_ms: float
    quantize_ms: float
    pack_ms: float
    interleave: int = 1  # codec.slices.cell_order

    @property
    def payload_bytes(self) -> int:
        """The frame's payload bytes, all slices together."""
        return sum(len(s.payload) for s in self.slices)

    @property
    def encode_ms(self) -> float:
        """Points -> payload, all stages."""
        return self.bev_ms + self.quantize_ms + self.pack_ms


class AgentEncoder:
    """Encodes sweeps with a RuntimeModel's backbone and codec (inference only).

    slice_bytes: the largest payload of one message (0: the whole map in one message);
    interleave: the slices' cell order (``codec.slices.cell_order``; 1: row-major);
    stage_timing: on CUDA, wait for the device after the BEV stage so that ``bev_ms`` and
    ``quantize_ms`` are each their own stage's (benchmarks); False (the nodes): the only wait is
    the indices' copy to the host, ``bev_ms`` is the time to queue the BEV stage and
    ``quantize_ms`` holds the rest of its GPU time. ``encode_ms`` is exact either way; on the
    CPU both are the same.
    """

    def __init__(
        self,
        model: RuntimeModel,
        encoding: Encoding = Encoding.PACKED,
        slice_bytes: int = 0,
        interleave: int = 1,
        stage_timing: bool = False,
    ) -> None:
        if encoding is Encoding.ENTROPY and model.context_tables is not None:
            encoding = Encoding.CONTEXT  # the better model, when the file has its tables
        if encoding is Encoding.ENTROPY and model.entropy_tables is None:
            raise RuntimeConfigError(
                f"{model.source or 'model'}: entropy encoding needs the codec state's frequency tables, "
                "and this model has none (use packed)"
            )
        if encoding is Encoding.CONTEXT and model.context_tables is None:
            raise RuntimeConfigError(
                f"{model.source or 'model'}: context encoding needs the codec state's context tables, "
                "and this model has none (use entropy or packed)"
            )
        if slice_bytes < 0:
            raise RuntimeConfigError(
                f"slice_bytes must be >= 0 (0: the whole map in one message), got {slice_bytes}"
            )
        if slice_bytes:
            settings = model.settings
            try:
                packed_cells_per_slice(slice_bytes, settings.num_quantizers, settings.codebook_size)
            except WireFormatError as exc:
                raise RuntimeConfigError(f"slice_bytes: {exc}") from None
        try:
            check_interleave(interleave, *model.grid.bev_shape)
        except SliceError as exc:
            raise RuntimeConfigError(f"interleave: {exc}") from None
        self.model = model
        self.encoding = Encoding(encoding)
        self.slice_bytes = int(slice_bytes)
        self.interleave = int(interleave)
        self.stage_timing = stage_timing

    def warm_up(self) -> None:
        """Encode a small stand-in sweep once (a line of 64 points along x, inside the grid), so
        that the first-call set-up of the backbone and codec (seconds on a loaded machine) is
        paid before the node subscribes, not on its first real sweep."""
        grid = self.model.grid
        x = np.linspace(0.1, 0.9, 64, dtype=np.float32) * np.float32(grid.x_range_m[1])
        z = np.float32(sum(grid.z_range_m) / 2)
        self.encode(np.stack([x, np.zeros_like(x), np.full_like(x, z), np.full_like(x, 0.5)], axis=1))

    @torch.no_grad()
    def encode(self, points: np.ndarray) -> EncodedSweep:
        """(N, 4) float32 ``x, y, z, intensity`` in the agent's LiDAR frame -> EncodedSweep."""
        detector, device = self.model.detector, self.model.device
        start = now_ms(device, wait=self.stage_timing)
        cloud = torch.as_tensor(np.ascontiguousarray(points, dtype=np.float32)).to(device)
        bev = detector.bev_features(cloud)
        after_bev = now_ms(device, wait=self.stage_timing)
        indices = detector.codec.encode(bev)[0].cpu().numpy()  # the copy to the host waits for the device
        after_quantize = now_ms(device, wait=False)
        slices = self.pack(indices)
        after_pack = now_ms(device, wait=False)
        return EncodedSweep(
            slices,
            indices,
            after_bev - start,
            after_quantize - after_bev,
            after_pack - after_quantize,
            self.interleave,
        )

    def pack(self, indices: np.ndarray) -> list[Slice]:
        """(Q, H, W) int64 indices -> the payloads of their messages, in this encoder's encoding,
        budget and cell order (the "pack" stage)."""
        return cut_slices(
            indices,
            self.model.settings.codebook_size,
            self.slice_bytes,
            self.encoding,
            self.model.entropy_tables,
            self.interleave,
            self.model.context_tables,
        )

    def messages(
        self,
        slices: Sequence[Slice],
        *,
        agent_id: str,
        T_world_from_lidar: np.ndarray,
        stamp_ns: int = 0,
        sequence: int = 0,
        role: int = 0,
        frame_id: str = "",
        signer: Signer | None = None,
    ) -> list[ReceivedSlice]:
        """The messages of a sweep's ``slices`` (all of them, cut by this encoder) as a receiver
        gets them, each signed by ``signer`` (None: unsigned); T_world_from_lidar: (4, 4)
        float64 sender pose; ``sequence`` wraps at 2**32 (a uint32 field)."""
        height, width = self.model.grid.bev_shape
        settings = self.model.settings
        position, orientation = pose_fields(T_world_from_lidar)
        messages = [
            ReceivedSlice(
                agent_id=agent_id,
                role=role,
                sequence=sequence % (1 << 32),
                stamp_ns=stamp_ns,
                frame_id=frame_id,
                position=position,
                orientation=orientation,
                height=height,
                width=width,
                cell_size_m=self.model.grid.cell_size_m,
                codebook_size=settings.codebook_size,
                num_quantizers=settings.num_quantizers,
                codebook_id=self.model.codebook_id,
                encoding=int(piece.encoding),
                payload=piece.payload,
                slice_index=index,
                num_slices=len(slices),
                first_cell=piece.first_cell,
                num_cells=piece.num_cells,
                interleave=self.interleave,
            )
            for index, piece in enumerate(slices)
        ]
        return messages if signer is None else [sign_slice(m, signer) for m in messages]
