"""Evaluate a model file on a DAIR-V2X-C split, through the wire, as the runtime would run it.

Per frame (ego first, agents beyond the model's ``comm_range_m`` dropped, as in training):

- codec models: every agent (the ego too) encodes its own cloud to indices; the indices are
  written as a PACKED payload and as an ENTROPY payload (``codec.wire.encode_payload``, which
  falls back to PACKED when entropy coding does not make it smaller, as the runtime does),
  both sizes are recorded, the ENTROPY message is decoded with ``decode_payload`` (checked
  equal to what was sent), rebuilt by ``CodecDecoder`` from the file's frozen codec state, and
  ``detect_from_bev`` fuses the rebuilt maps;
- raw fusion: float32 maps, C * H * W * 4 bytes per agent;
- ego only: the ego's map alone, 0 bytes;
- late fusion (an ego-only model run in "late" mode): each agent detects on its own map, the
  boxes are merged at the ego; each agent's bytes are its boxes (``bandwidth.late_bytes``).

With ``slice_loss`` (``revqom eval --slice-loss P``), every partner's map (never the ego's) is
also cut into PACKED slices as the agent node cuts it (``codec.slices.cut_slices`` with the
budget and interleave given), each slice is lost with probability P (seeded), and the rest
is assembled, decoded from the received cells with concealment and fused with the per-cell
validity, as the fusion node does with what arrives: the offline twin of the network test bed.

Bytes per agent per frame are the mean over all agents of all frames. AP follows the
OpenCOOD protocol (ap.py) over x +-100 m, y +-40 m, clipped to the model's grid when smaller.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from tqdm import tqdm

from revqom_nodes.data.dairv2x import CooperativeFrame
from revqom_nodes.defaults import node_defaults
from revqom_nodes.evaluation.ap import DEFAULT_RANGE_M, ApAccumulator
from revqom_nodes.evaluation.bandwidth import late_bytes, raw_bytes
from revqom_nodes.evaluation.errors import EvaluationError
from revqom_nodes.model_file import LoadedModel
from revqom_nodes.perception.grid import BevGrid
from revqom_nodes.perception.postprocess import Detections, merge_detections
from revqom_nodes.perception.sample import crop_to_grid, frame_to_sample


def eval_range(grid: BevGrid) -> tuple[tuple[float, float, float, float], str | None]:
    """The OpenCOOD range (x_min, y_min, x_max, y_max) clipped to the grid, and a note when clipped."""
    x_min, y_min, x_max, y_max = DEFAULT_RANGE_M
    clipped = (
        max(x_min, grid.x_range_m[0]), max(y_min, grid.y_range_m[0]),
        min(x_max, grid.x_range_m[1]), min(y_max, grid.y_range_m[1]),
    )
    if clipped == tuple(DEFAULT_RANGE_M):
        return clipped, None
    return clipped, (
        f"the model's BEV grid (x {list(grid.x_range_m)} m, y {list(grid.y_range_m)} m) is smaller than "
        f"the OpenCOOD range x +-100 m, y +-40 m: AP is computed over x [{clipped[0]}, {clipped[2]}] m, "
        f"y [{clipped[1]}, {clipped[3]}] m"
    )


AGENT_DEFAULTS = node_defaults("agent")  # the slices of SliceLoss are the agent node's


class SliceLoss(NamedTuple):
    """Random loss of whole slices of the partners' maps (module docstring)."""

    probability: float  # each slice is lost with this probability, independently
    slice_bytes: int = AGENT_DEFAULTS["output.slice_bytes"]  # PACKED payload budget of a slice, bytes
    interleave: int = AGENT_DEFAULTS["output.interleave"]  # the slices' cell order
    seed: int = 0


class _Wire:
    """Sender + receiver of one codec model: encode, measure, (lose slices,) decode, rebuild."""

    def __init__(self, loaded: LoadedModel, slice_loss: SliceLoss | None = None) -> None:
        from revqom_nodes.codec import CodecDecoder

        self.state = loaded.codec_state
        self.receiver = CodecDecoder(self.state).to(loaded.detector.device)
        self.indices: list[np.ndarray] = []
        self.slice_loss = slice_loss
        self.rng = np.random.default_rng(None if slice_loss is None else slice_loss.seed)
        self.cells_received: list[float] = []

    def send(
        self, indices: torch.Tensor, lossy: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None, int, int]:
        """(1, Q, H, W) indices -> (rebuilt map (1, C, H, W), the (H, W) bool cells it holds (None:
        all), packed bytes, entropy-coded bytes). ``lossy``: lose slices as ``slice_loss`` says."""
        from revqom_nodes.codec.wire import Encoding, decode_payload, encode_payload

        settings = self.state.settings
        sent = indices[0].cpu().numpy()
        self.indices.append(sent)
        packed, _ = encode_payload(sent, settings.codebook_size, Encoding.PACKED)
        payload, encoding = encode_payload(
            sent, settings.codebook_size, Encoding.ENTROPY, self.state.entropy_tables
        )
        q, h, w = sent.shape
        received = decode_payload(
            payload, height=h, width=w, num_quantizers=q, codebook_size=settings.codebook_size,
            encoding=encoding, frequency_tables=self.state.entropy_tables,
        )
        if not np.array_equal(received, sent):
            raise EvaluationError("the wire round trip changed the indices")
        if not lossy or self.slice_loss is None:
            return self.receiver.decode(torch.from_numpy(received)[None]), None, len(packed), len(payload)
        rebuilt, held = self._lose_slices(sent)
        return rebuilt, held, len(packed), len(payload)

    def _lose_slices(self, sent: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(Q, H, W) indices -> the map rebuilt from the slices that survived, and its held cells."""
        from revqom_nodes.codec.conceal import concealed_valid
        from revqom_nodes.codec.slices import SliceAssembly, cut_slices
        from revqom_nodes.codec.wire import Encoding, decode_cells

        loss, settings = self.slice_loss, self.state.settings
        q, h, w = sent.shape
        pieces = cut_slices(sent, settings.codebook_size, loss.slice_bytes, Encoding.PACKED,
                            interleave=loss.interleave)
        assembly = SliceAssembly(q, h, w, len(pieces), loss.interleave)
        for index, piece in enumerate(pieces):
            if self.rng.random() < loss.probability:
                continue
            cells = decode_cells(piece.payload, num_cells=piece.num_cells, num_quantizers=q,
                                 codebook_size=settings.codebook_size, encoding=piece.encoding)
            assembly.add(piece.first_cell, piece.num_cells, cells, slice_index=index,
                         num_slices=len(pieces), interleave=loss.interleave)
        self.cells_received.append(assembly.fraction)
        device = self.receiver.codebooks.device
        valid = torch.from_numpy(assembly.valid.copy())[None].to(device)
        rebuilt = self.receiver.decode(torch.from_numpy(assembly.indices.copy())[None], valid)
        return rebuilt, concealed_valid(valid)[0]


def _detect(loaded: LoadedModel, points: list[torch.Tensor], poses: np.ndarray, wire: _Wire | None
            ) -> tuple[Detections, list[int], list[int]]:
    """One frame -> detections in the ego frame, packed and entropy bytes per agent."""
    detector, config = loaded.detector, loaded.config
    if config.mode == "ego_only":
        return detector.detect_own_map(detector.bev_features(points[0])), [0] * len(points), [0] * len(points)
    maps = detector.bev_features_batch(points)
    if config.mode == "late":
        per_agent = [detector.detect_own_map(m) for m in maps.split(1)]
        sizes = [late_bytes(len(d.boxes)) for d in per_agent]
        return merge_detections(per_agent, list(poses), config.head), sizes, sizes
    if wire is None:
        size = raw_bytes(maps.shape[1], maps.shape[2], maps.shape[3])
        sizes = [size] * len(points)
        return detector.detect_from_bev(list(maps.split(1)), poses), sizes, sizes
    rebuilt, held, packed, entropy = [], [], [], []
    for agent, agent_map in enumerate(maps.split(1)):
        bev, cells, packed_bytes, entropy_bytes = wire.send(detector.codec.encode(agent_map), lossy=agent > 0)
        rebuilt.append(bev)
        held.append(cells)
        packed.append(packed_bytes)
        entropy.append(entropy_bytes)
    valid = held if any(cells is not None for cells in held) else None
    return detector.detect_from_bev(rebuilt, poses, valid), packed, entropy


@torch.no_grad()
def evaluate_model(
    loaded: LoadedModel,
    frames: Sequence[CooperativeFrame],
    *,
    name: str,
    progress: bool = True,
    slice_loss: SliceLoss | None = None,
) -> dict[str, Any]:
    """Run ``loaded`` on ``frames`` -> the OUT.json mapping (see the evaluation CLI); ``slice_loss``
    (codec models only) loses slices of the partners' maps (module docstring)."""
    from revqom_nodes.codec.entropy import empirical_entropy_bits

    config = loaded.config
    train = loaded.resolved_config.get("train", {})
    max_agents = 1 if config.mode == "ego_only" else int(train.get("max_agents", 2))
    comm_range_m = float(train.get("comm_range_m", 100.0))
    range_m, note = eval_range(config.grid)
    accumulator = ApAccumulator(range_m=range_m)
    if slice_loss is not None and loaded.codec_state is None:
        raise EvaluationError(f"{name}: slice loss needs a model that sends codebook indices")
    wire = _Wire(loaded, slice_loss) if loaded.codec_state is not None else None
    packed_all: list[int] = []
    entropy_all: list[int] = []
    per_frame = []
    loaded.detector.eval()
    for frame in tqdm(frames, desc=f"eval {name}", unit="frame", disable=not progress):
        sample = frame_to_sample(frame, config.grid, max_agents=max_agents, comm_range_m=comm_range_m)
        gt = frame.boxes_in(frame.ego.T_world_from_lidar)
        points = [torch.from_numpy(crop_to_grid(p, config.grid)) for p in sample.points]
        detections, packed, entropy = _detect(loaded, points, sample.T_ego_from_agent, wire)
        accumulator.add_frame(detections.boxes, detections.scores, gt)
        packed_all += packed
        entropy_all += entropy
        pred = np.column_stack([detections.boxes, detections.scores]) if len(detections.boxes) else []
        per_frame.append({
            "frame_id": frame.frame_id,
            "agents": len(points),
            "pred": np.round(np.asarray(pred, dtype=np.float64), 5).tolist(),
            "gt": np.round(gt, 5).tolist(),
            "bytes": {"packed": packed, "entropy": entropy},
        })
    if not per_frame:
        raise EvaluationError("no frames to evaluate")
    height, width = config.grid.bev_shape
    mean_packed, mean_entropy = float(np.mean(packed_all)), float(np.mean(entropy_all))
    result: dict[str, Any] = {
        "model": name,
        "mode": {"cooperative": "raw" if wire is None else "revqom"}.get(config.mode, config.mode),
        "model_id": loaded.model_id,
        "codebook_id": loaded.codebook_id,
        "codec": None if config.codec is None else config.codec.to_dict(),
        "ap": accumulator.result(),
        "frames": len(per_frame),
        "ground_truth_boxes": accumulator.num_gt,
        "bytes_per_agent_frame": {"packed": mean_packed, "entropy": mean_entropy},
        "bpp": {"packed": mean_packed * 8 / (height * width), "entropy": mean_entropy * 8 / (height * width)},
        "bev_shape": [height, width],
        "cell_size_m": config.grid.cell_size_m,
        "eval_range_m": list(range_m),
        "eval_range_note": note,
    }
    if wire is not None:
        stacked = np.stack(wire.indices)
        bits = empirical_entropy_bits(stacked, config.codec.codebook_size)
        result["entropy_bits_per_stage"] = bits.tolist()
        result["bits_per_index"] = config.codec.bits_per_index
    if slice_loss is not None:
        received = wire.cells_received
        result["slice_loss"] = {
            **slice_loss._asdict(),
            "partner_maps": len(received),
            "mean_cells_received": float(np.mean(received)) if received else None,
        }
    result["per_frame"] = per_frame
    return result
