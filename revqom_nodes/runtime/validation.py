"""The receiver's checks of one EncodedBEV message, each failure a counted ``RejectReason``.

Order (cheap first; nothing sized by a message field is allocated before its checks):
codebook id -> codec settings (K, Q) -> grid (H, W, cell size) -> slice fields (cell range
inside the grid) -> encoding -> pose -> payload (``decode_cells``, which checks length,
padding, ranges). Agent identity, age, ordering and how a slice fits the slices of its frame
received before depend on the other messages held and are checked by ``inbox.Inbox``.
"""

from __future__ import annotations

import enum
import math
import time
from dataclasses import dataclass

import numpy as np

from revqom_nodes.codec.errors import WireFormatError
from revqom_nodes.codec.slices import SliceAssembly, SliceError, check_slice_fields
from revqom_nodes.codec.wire import Encoding, check_codebook_id, decode_cells
from revqom_nodes.runtime.frames import AgentFrame
from revqom_nodes.runtime.model import RuntimeModel

CELL_SIZE_TOLERANCE_M = 1e-4  # cell_size_m travels as float32
ROTATION_TOLERANCE = 1e-3


class RejectReason(str, enum.Enum):
    """Why a message was dropped; the values are the names in FusionStatus.rejected_reasons."""

    UNKNOWN_AGENT = "unknown_agent"  # agent id not configured for the topic it came on
    CODEBOOK_MISMATCH = "codebook_mismatch"  # codebook_id differs from the model's
    CODEC_MISMATCH = "codec_mismatch"  # codebook_size or num_quantizers differ
    GRID_MISMATCH = "grid_mismatch"  # height, width or cell size differ (oversize claims too)
    UNKNOWN_ENCODING = "unknown_encoding"
    BAD_POSE = "bad_pose"  # NaN / infinite values, or not a rigid transform
    BAD_SLICE = "bad_slice"  # cell range outside the map, overlapping, or unlike its frame's other slices
    MALFORMED_PAYLOAD = "malformed_payload"  # the wire format's checks failed
    STALE = "stale"  # older than max_age_ms before the newest ego sweep
    OUT_OF_ORDER = "out_of_order"  # a duplicate, or older than the agent's last accepted sweep


class Rejected(Exception):
    """A message failed a check: ``reason`` is counted, ``detail`` logged (rate-limited)."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Expectations:
    """What every accepted message must match: the receiver's model."""

    height: int
    width: int
    cell_size_m: float
    codebook_size: int
    num_quantizers: int
    codebook_id: str
    entropy_tables: np.ndarray | None

    @classmethod
    def of(cls, model: RuntimeModel) -> Expectations:
        height, width = model.grid.bev_shape
        settings = model.settings
        return cls(
            height,
            width,
            model.grid.cell_size_m,
            settings.codebook_size,
            settings.num_quantizers,
            model.codebook_id,
            model.entropy_tables,
        )


def is_rigid(T: np.ndarray) -> bool:
    """A finite (4, 4) matrix with a rotation block (R R^T = I, det 1) and last row (0, 0, 0, 1)."""
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4) or not np.isfinite(T).all():
        return False
    R = T[:3, :3]
    return (
        np.allclose(R @ R.T, np.eye(3), atol=ROTATION_TOLERANCE)
        and abs(np.linalg.det(R) - 1.0) < ROTATION_TOLERANCE
        and np.allclose(T[3], (0.0, 0.0, 0.0, 1.0))
    )


def check_slice(frame: AgentFrame, expect: Expectations) -> np.ndarray:
    """Run every content check of one message; returns its (Q, num_cells) int64 indices (the
    cells ``[first_cell, first_cell + num_cells)``, stage-major) and sets ``frame.decode_ms``.

    Raises Rejected with the first failing reason.
    """
    try:
        check_codebook_id(frame.codebook_id, expect.codebook_id)
    except WireFormatError as exc:
        raise Rejected(RejectReason.CODEBOOK_MISMATCH, str(exc)) from None
    if (frame.codebook_size, frame.num_quantizers) != (expect.codebook_size, expect.num_quantizers):
        raise Rejected(
            RejectReason.CODEC_MISMATCH,
            f"K={frame.codebook_size} Q={frame.num_quantizers}, model has "
            f"K={expect.codebook_size} Q={expect.num_quantizers}",
        )
    cell = float(frame.cell_size_m)
    if (frame.height, frame.width) != (expect.height, expect.width) or not (
        math.isfinite(cell) and abs(cell - expect.cell_size_m) <= CELL_SIZE_TOLERANCE_M
    ):
        raise Rejected(
            RejectReason.GRID_MISMATCH,
            f"grid {frame.height}x{frame.width} cells of {cell} m, model has "
            f"{expect.height}x{expect.width} of {expect.cell_size_m} m",
        )
    try:
        check_slice_fields(
            slice_index=frame.slice_index,
            num_slices=frame.num_slices,
            first_cell=frame.first_cell,
            num_cells=frame.num_cells,
            height=expect.height,
            width=expect.width,
            interleave=frame.interleave,
        )
    except SliceError as exc:
        raise Rejected(RejectReason.BAD_SLICE, str(exc)) from None
    try:
        encoding = Encoding(frame.encoding)
    except ValueError:
        raise Rejected(RejectReason.UNKNOWN_ENCODING, f"encoding {frame.encoding}") from None
    if not is_rigid(frame.T_world_from_lidar):
        raise Rejected(RejectReason.BAD_POSE, "lidar_pose is not a finite rigid transform")
    start = time.perf_counter()
    try:
        indices = decode_cells(
            frame.payload,
            num_cells=frame.num_cells,
            num_quantizers=expect.num_quantizers,
            codebook_size=expect.codebook_size,
            encoding=encoding,
            frequency_tables=expect.entropy_tables,
        )
    except WireFormatError as exc:
        raise Rejected(RejectReason.MALFORMED_PAYLOAD, str(exc)) from None
    frame.decode_ms = (time.perf_counter() - start) * 1e3
    return indices


def check_frame(frame: AgentFrame, expect: Expectations) -> np.ndarray:
    """``check_slice`` of a message that carries a whole map (one slice) -> (Q, H, W) int64 indices.

    Raises Rejected (BAD_SLICE for a slice of a larger frame: the inbox assembles those).
    """
    cells = check_slice(frame, expect)
    if frame.num_slices != 1:
        raise Rejected(
            RejectReason.BAD_SLICE, f"slice {frame.slice_index} of {frame.num_slices}: not a whole map"
        )
    assembly = SliceAssembly(
        expect.num_quantizers, expect.height, expect.width, interleave=frame.interleave
    )
    try:
        assembly.add(frame.first_cell, frame.num_cells, cells, interleave=frame.interleave)
    except SliceError as exc:
        raise Rejected(RejectReason.BAD_SLICE, str(exc)) from None
    if not assembly.valid.all():
        raise Rejected(RejectReason.BAD_SLICE, f"one slice of {frame.num_cells} cells: not a whole map")
    return assembly.indices
