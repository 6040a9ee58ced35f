"""The receiver's checks of one EncodedBEV message, each failure a counted ``RejectReason``,
and the assembly of a sweep's accepted slices into the map fusion takes.

Order of ``check_slice`` (cheap first; nothing sized by a message field is allocated before
its checks): ``check_header`` (microseconds; the fusion node runs it on the reception thread):
codebook id -> codec settings (K, Q) -> grid (H, W, cell size) -> slice fields (cell range
inside the grid) -> encoding -> payload size (bounded by a whole packed map's, see
``MAX_PAYLOAD_FACTOR``); then ``decode_slice``: pose -> payload (``decode_cells``, which checks length,
padding, ranges). ``FrameAssembly.add`` then checks how a slice fits the slices of its
sweep received before. Agent identity, age and ordering depend on the other messages held and
are checked by ``inbox.Inbox``.
"""

from __future__ import annotations

import enum
import math
import time
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from revqom_nodes.codec.context import CellRun, ContextTables
from revqom_nodes.codec.errors import WireFormatError
from revqom_nodes.codec.slices import SliceAssembly, SliceError, check_slice_fields
from revqom_nodes.codec.wire import Encoding, check_codebook_id, decode_cells, packed_size
from revqom_nodes.runtime.frames import AssembledMap, ReceivedSlice
from revqom_nodes.runtime.model import RuntimeModel

CELL_SIZE_TOLERANCE_M = 1e-4  # cell_size_m travels as float32
ROTATION_TOLERANCE = 1e-3
_RTOL, _ATOL = 1e-5, 1e-8  # numpy.allclose's defaults, which is_rigid's checks were written with
POSE_TOLERANCE = 1e-9  # the slices of one sweep repeat the same pose
# A payload above MAX_PAYLOAD_FACTOR whole packed maps plus MAX_PAYLOAD_SLACK_BYTES (the range coder's
# stage lengths and flushes, which dominate tiny maps) is malformed: this bounds the memory of queued slices.
MAX_PAYLOAD_FACTOR = 2
MAX_PAYLOAD_SLACK_BYTES = 4096


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
    # Authentication (runtime/security.py, docs/security.md), when a trust store is configured:
    UNSIGNED = "unsigned"  # no authenticator
    UNKNOWN_SIGNER = "unknown_signer"  # the signer digest names no certificate of the trust store
    REVOKED = "revoked"  # the signer's certificate is on the revocation list
    EXPIRED = "expired"  # the stamp lies outside the certificate's validity
    ROLE_MISMATCH = "role_mismatch"  # the certificate is for another agent id or role
    CLOCK_SKEW = "clock_skew"  # stamp farther than security.max_clock_skew_ms from the receiver's clock
    BAD_SIGNATURE = "bad_signature"  # the signature does not verify (forged or tampered)
    REPLAYED = "replayed"  # an authentic slice seen before, or not newer than its signer's last sweep
    OUT_OF_RANGE = "out_of_range"  # a partner's map left out: farther than the comm range from the ego
    INTAKE_OVERFLOW = "intake_overflow"  # screened, then pushed out of its sender's full intake queue


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
    context_tables: ContextTables | None

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
            model.context_tables,
        )


def is_rigid(T: np.ndarray) -> bool:
    """A finite (4, 4) matrix with a rotation block (R R^T = I and det 1, each within
    ``ROTATION_TOLERANCE``) and last row (0, 0, 0, 1). In Python floats: the receiver checks
    every slice's pose, and numpy's per-call overhead made that 75 µs."""
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4):
        return False
    rows = T.tolist()
    if not all(math.isfinite(v) for row in rows for v in row):
        return False
    r0, r1, r2 = (row[:3] for row in rows[:3])
    for i, a in enumerate((r0, r1, r2)):  # numpy.allclose's test: |x - y| <= atol + rtol * |y|
        for j, b in enumerate((r0, r1, r2)[i:], start=i):
            tolerance = ROTATION_TOLERANCE + _RTOL * (i == j)
            if abs(a[0] * b[0] + a[1] * b[1] + a[2] * b[2] - (i == j)) > tolerance:
                return False
    det = (
        r0[0] * (r1[1] * r2[2] - r1[2] * r2[1])
        - r0[1] * (r1[0] * r2[2] - r1[2] * r2[0])
        + r0[2] * (r1[0] * r2[1] - r1[1] * r2[0])
    )
    bottom = zip(rows[3], (0.0, 0.0, 0.0, 1.0), strict=True)
    last_row = all(abs(v - e) <= _ATOL + _RTOL * e for v, e in bottom)
    return abs(det - 1.0) < ROTATION_TOLERANCE and last_row


class CheckedSlice(NamedTuple):
    """A message that passed ``check_slice``, with its payload decoded."""

    message: ReceivedSlice
    cells: np.ndarray  # (Q, num_cells) int64: the cells [first_cell, first_cell + num_cells), stage-major
    decode_ms: float  # payload -> cells


def check_slice(message: ReceivedSlice, expect: Expectations) -> CheckedSlice:
    """Run every content check of one message and decode its payload (``check_header``, then
    ``decode_slice``). Raises Rejected with the first failing reason."""
    check_header(message, expect)
    return decode_slice(message, expect)


def check_header(message: ReceivedSlice, expect: Expectations) -> None:
    """The content checks that cost microseconds: every field but the pose and the payload's
    contents. Raises Rejected with the first failing reason."""
    try:
        check_codebook_id(message.codebook_id, expect.codebook_id)
    except WireFormatError as exc:
        raise Rejected(RejectReason.CODEBOOK_MISMATCH, str(exc)) from None
    if (message.codebook_size, message.num_quantizers) != (expect.codebook_size, expect.num_quantizers):
        raise Rejected(
            RejectReason.CODEC_MISMATCH,
            f"K={message.codebook_size} Q={message.num_quantizers}, model has "
            f"K={expect.codebook_size} Q={expect.num_quantizers}",
        )
    cell = float(message.cell_size_m)
    if (message.height, message.width) != (expect.height, expect.width) or not (
        math.isfinite(cell) and abs(cell - expect.cell_size_m) <= CELL_SIZE_TOLERANCE_M
    ):
        raise Rejected(
            RejectReason.GRID_MISMATCH,
            f"grid {message.height}x{message.width} cells of {cell} m, model has "
            f"{expect.height}x{expect.width} of {expect.cell_size_m} m",
        )
    try:
        check_slice_fields(
            slice_index=message.slice_index,
            num_slices=message.num_slices,
            first_cell=message.first_cell,
            num_cells=message.num_cells,
            height=expect.height,
            width=expect.width,
            interleave=message.interleave,
        )
    except SliceError as exc:
        raise Rejected(RejectReason.BAD_SLICE, str(exc)) from None
    try:
        Encoding(message.encoding)
    except ValueError:
        raise Rejected(RejectReason.UNKNOWN_ENCODING, f"encoding {message.encoding}") from None
    limit = MAX_PAYLOAD_SLACK_BYTES + MAX_PAYLOAD_FACTOR * packed_size(
        expect.height, expect.width, expect.num_quantizers, expect.codebook_size
    )
    if message.payload_bytes > limit:
        raise Rejected(
            RejectReason.MALFORMED_PAYLOAD, f"payload of {message.payload_bytes} bytes (at most {limit})"
        )


def decode_slice(message: ReceivedSlice, expect: Expectations) -> CheckedSlice:
    """The pose check and the payload decoding of a message that passed ``check_header``.
    Raises Rejected (``BAD_POSE``, ``MALFORMED_PAYLOAD``)."""
    if not is_rigid(message.T_world_from_lidar):
        raise Rejected(RejectReason.BAD_POSE, "lidar_pose is not a finite rigid transform")
    start = time.perf_counter()
    try:
        indices = decode_cells(
            message.payload,
            num_cells=message.num_cells,
            num_quantizers=expect.num_quantizers,
            codebook_size=expect.codebook_size,
            encoding=Encoding(message.encoding),
            frequency_tables=expect.entropy_tables,
            context_tables=expect.context_tables,
            run=CellRun(expect.height, expect.width, message.first_cell, message.interleave),
        )
    except WireFormatError as exc:
        raise Rejected(RejectReason.MALFORMED_PAYLOAD, str(exc)) from None
    return CheckedSlice(message, indices, (time.perf_counter() - start) * 1e3)


class FrameAssembly:
    """The accepted slices of one agent's sweep -> its ``AssembledMap``.

    ``header``: any message of the sweep (agent, stamp, frame id, pose, num_slices and interleave
    are the sweep's); slices are placed with ``add``, in any order. Memory: one ``SliceAssembly``.
    """

    def __init__(self, header: ReceivedSlice, expect: Expectations) -> None:
        self.header = header
        self._cells = SliceAssembly(
            expect.num_quantizers, expect.height, expect.width, header.num_slices, header.interleave
        )
        self._payload_bytes = 0
        self._decode_ms = 0.0

    @property
    def complete(self) -> bool:
        """Every one of the sweep's slices arrived."""
        return self._cells.complete

    def has(self, slice_index: int) -> bool:
        """Whether slice ``slice_index`` of this sweep was placed (False outside 0..num_slices - 1)."""
        return 0 <= slice_index < self._cells.num_slices and self._cells.has(slice_index)

    def add(self, checked: CheckedSlice) -> None:
        """Place one checked slice of this sweep; raises Rejected (nothing changes): OUT_OF_ORDER
        for a duplicate, BAD_SLICE for a slice unlike the sweep's (num_slices, interleave, pose)
        or overlapping cells already received."""
        message, header = checked.message, self.header
        if message.num_slices != self._cells.num_slices:
            raise Rejected(
                RejectReason.BAD_SLICE,
                f"{message.agent_id} slice says num_slices {message.num_slices}, "
                f"its frame's first said {self._cells.num_slices}",
            )
        if self._cells.has(message.slice_index):
            raise Rejected(
                RejectReason.OUT_OF_ORDER,
                f"{message.agent_id} slice {message.slice_index} of sweep {message.stamp_ns} is a duplicate",
            )
        # np.allclose with rtol 0, in one pass (it costs 20-40 us a slice); NaN is not close
        if not np.abs(message.T_world_from_lidar - header.T_world_from_lidar).max() <= POSE_TOLERANCE:
            raise Rejected(
                RejectReason.BAD_SLICE,
                f"{message.agent_id} slices of sweep {message.stamp_ns} differ in pose",
            )
        try:
            self._cells.add(
                message.first_cell,
                message.num_cells,
                checked.cells,
                slice_index=message.slice_index,
                num_slices=message.num_slices,
                interleave=message.interleave,
            )
        except SliceError as exc:
            raise Rejected(RejectReason.BAD_SLICE, f"{message.agent_id}: {exc}") from None
        self._payload_bytes += message.payload_bytes
        self._decode_ms += checked.decode_ms

    def snapshot(self) -> AssembledMap:
        """The map so far (copies): ``valid`` None when every cell arrived."""
        header, valid = self.header, self._cells.valid
        return AssembledMap(
            header.agent_id,
            header.stamp_ns,
            header.frame_id,
            header.T_world_from_lidar,
            self._cells.indices.copy(),
            None if valid.all() else valid.copy(),
            self._payload_bytes,
            self._decode_ms,
        )


def check_frame(message: ReceivedSlice, expect: Expectations) -> AssembledMap:
    """``check_slice`` of a message that carries a whole map (one slice) -> its AssembledMap.

    Raises Rejected (BAD_SLICE for a slice of a larger frame: ``FrameAssembly`` assembles those).
    """
    checked = check_slice(message, expect)
    if message.num_slices != 1:
        raise Rejected(
            RejectReason.BAD_SLICE, f"slice {message.slice_index} of {message.num_slices}: not a whole map"
        )
    assembly = FrameAssembly(message, expect)
    assembly.add(checked)
    whole = assembly.snapshot()
    if whole.valid is not None:
        raise Rejected(RejectReason.BAD_SLICE, f"one slice of {message.num_cells} cells: not a whole map")
    return whole
