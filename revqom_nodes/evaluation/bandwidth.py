"""Communication cost per agent per frame: bytes and bits per BEV cell.

The codec owns the index payload sizes: the fixed-rate size is
``codec.wire.packed_size(H, W, Q, K)`` = ceil(H * W * Q * ceil(log2 K) / 8) bytes, the
entropy-coded size is the measured length of ``codec.wire.encode_payload``, and
``codec.entropy.empirical_entropy_bits`` gives the Shannon bound. This module adds
the two baselines and the per-frame summary:

- raw: float32 feature maps, C * H * W * 4 bytes;
- late: boxes, BYTES_PER_BOX each (7 float32 box values + 1 float32 score).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from revqom_nodes.evaluation.errors import EvaluationError

BYTES_PER_BOX = 8 * 4


class BandwidthSummary(NamedTuple):
    """Bytes per agent per frame over a set of frames."""

    mean_bytes: float
    max_bytes: float
    bits_per_cell: float  # mean_bytes * 8 / (H * W); NaN for late fusion (no cells)


def raw_bytes(channels: int, height: int, width: int) -> int:
    """Uncompressed float32 BEV map (C, H, W) in bytes."""
    return channels * height * width * 4


def late_bytes(num_boxes: int) -> int:
    """Late fusion: one agent's boxes with scores, in bytes."""
    return num_boxes * BYTES_PER_BOX


def summarize(bytes_per_frame: Sequence[float], cells: int | None) -> BandwidthSummary:
    """Per-frame byte counts of one agent -> mean, max and bits per BEV cell (``cells`` None: NaN)."""
    values = np.asarray(bytes_per_frame, dtype=np.float64)
    if values.size == 0:
        raise EvaluationError("no frames to summarise")
    mean = float(values.mean())
    return BandwidthSummary(
        mean_bytes=mean,
        max_bytes=float(values.max()),
        bits_per_cell=mean * 8 / cells if cells else float("nan"),
    )
