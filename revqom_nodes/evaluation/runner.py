"""Evaluate a model file on a DAIR-V2X-C split, through the wire, as the runtime runs it.

Per frame (ego first, then every other agent within the model's ``comm_range_m``, as the fusion
node fuses them; ``DairV2XReader.ego_frame`` gives another vehicle's view):

- codec models: the runtime's own pipeline, agent by agent (the ego too): ``AgentEncoder``
  encodes the cloud into one entropy-coded message (CONTEXT when the file has context tables,
  else ENTROPY; PACKED when entropy coding does not make it smaller, as the agent node does),
  the receiver's ``validation.check_frame`` checks and decodes it (checked equal to what was
  sent) and ``FusionEngine`` rebuilds every map with the file's frozen codec state and fuses
  them, as the fusion node does. The ego's LiDAR frame stands for the world frame of the
  messages' poses. Bytes: the PACKED size (``codec.wire.packed_size``) and the message's
  payload;
- raw fusion: float32 maps, C * H * W * 4 bytes per agent;
- ego only: the ego's map alone, 0 bytes;
- late fusion (an ego-only model run in "late" mode): each agent detects on its own map, the
  boxes are merged at the ego; each agent's bytes are its boxes (``bandwidth.late_bytes``).

With ``slice_loss`` (``revqom eval --slice-loss P``), every partner's map (never the ego's) is
also cut into PACKED slices as the agent node cuts it (an ``AgentEncoder`` with the budget and
interleave given), each slice is lost with probability P (seeded), and the rest is checked
and assembled (``validation.FrameAssembly``), decoded from the received cells with concealment
and fused with the per-cell validity, as the fusion node does with what arrives: the offline
twin of the network test bed. Such a map keeps its validity even when no slice was lost (the
fusion node's inbox passes None then; the two decoder paths agree to float rounding).

With ``limits`` (``revqom eval --max-partners N --max-bytes-per-frame B``, codec models; the
fusion node's ``fusion.max_partners`` and ``fusion.max_bytes_per_frame``), the engine fuses at
most that many partners and payload bytes of theirs per frame, most new occupied cells per byte first
(``runtime.selection.select_partners``, as the node does); ``ap_by_partners`` (by distance) is
then capped too.

Bytes per agent per frame are the mean over all agents of all frames (each agent is encoded
whether fused or not); partner bytes per frame, the mean over frames of the fused partners'
bytes together. AP follows the
OpenCOOD protocol (ap.py) over x +-100 m, y +-40 m, clipped to the model's grid when smaller.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, NamedTuple

import numpy as np
import torch
from tqdm import tqdm

from revqom_nodes.codec.wire import Encoding, packed_size
from revqom_nodes.data.dairv2x import CooperativeFrame
from revqom_nodes.defaults import node_defaults
from revqom_nodes.evaluation.ap import DEFAULT_RANGE_M, ApAccumulator
from revqom_nodes.evaluation.bandwidth import late_bytes, raw_bytes
from revqom_nodes.evaluation.errors import EvaluationError
from revqom_nodes.model_file import LoadedModel
from revqom_nodes.perception.grid import BevGrid
from revqom_nodes.perception.postprocess import Detections, merge_detections
from revqom_nodes.perception.sample import crop_to_grid, frame_to_sample, sample_agents
from revqom_nodes.runtime.encoder import AgentEncoder, EncodedSweep
from revqom_nodes.runtime.frames import AssembledMap
from revqom_nodes.runtime.fusion import FusionEngine, FusionResult
from revqom_nodes.runtime.model import RuntimeModel
from revqom_nodes.runtime.selection import NO_LIMITS, PartnerLimits
from revqom_nodes.runtime.validation import Expectations, FrameAssembly, Rejected, check_frame, check_slice


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
    """The runtime's sender and receiver of one codec model, agent by agent (module docstring)."""

    def __init__(
        self, loaded: LoadedModel, name: str, slice_loss: SliceLoss | None = None,
        limits: PartnerLimits = NO_LIMITS, merge_ego_detections: bool = False,
    ) -> None:
        model = RuntimeModel.from_loaded(loaded, name)
        self.encoder = AgentEncoder(model, Encoding.ENTROPY)  # the whole map, PACKED when not smaller
        self.lossy = None if slice_loss is None else AgentEncoder(
            model, Encoding.PACKED, slice_loss.slice_bytes, slice_loss.interleave
        )
        self.engine = FusionEngine(model, limits=limits, merge_ego_detections=merge_ego_detections)
        self.expect = Expectations.of(model)
        self.packed_bytes = packed_size(*model.grid.bev_shape, model.settings.num_quantizers,
                                        model.settings.codebook_size)
        self.slice_loss = slice_loss
        self.rng = np.random.default_rng(None if slice_loss is None else slice_loss.seed)
        self.indices: list[np.ndarray] = []
        self.cells_received: list[float] = []

    def receive(self, clouds: list[np.ndarray], poses: np.ndarray, stamps_ns: list[int]
                ) -> tuple[list[AssembledMap], list[int], list[int]]:
        """A clouds (N_a, 4), (A, 4, 4) T_ego_from_agent and sweep stamps (ns), ego first -> each
        agent's map as the receiver holds it, packed and entropy-coded bytes per agent. The ego's
        frame stands for the world frame; the stamps give the fusion each partner's real age; the
        agent ids are the agents' indices ("0" the ego)."""
        received, entropy = [], []
        for agent, (cloud, T, stamp_ns) in enumerate(zip(clouds, poses, stamps_ns, strict=True)):
            sweep = self.encoder.encode(cloud)
            self.indices.append(sweep.indices)
            entropy.append(sweep.payload_bytes)
            try:
                (message,) = self.encoder.messages(sweep.slices, agent_id=str(agent), T_world_from_lidar=T,
                                                   stamp_ns=stamp_ns)
                whole = check_frame(message, self.expect)
                lossy = agent > 0 and self.lossy is not None
                received.append(self._lose_slices(sweep, str(agent), T, stamp_ns) if lossy else whole)
            except Rejected as exc:
                raise EvaluationError(f"the receiver refused agent {agent}'s message: {exc}") from exc
            if not np.array_equal(whole.indices, sweep.indices):
                raise EvaluationError("the wire round trip changed the indices")
        return received, [self.packed_bytes] * len(clouds), entropy

    def fuse(self, maps: list[AssembledMap]) -> FusionResult:
        """Received maps, ego first -> the fusion node's engine's result (detections in the ego frame)."""
        return self.engine.fuse(maps[0], maps[1:])

    def _lose_slices(self, sweep: EncodedSweep, agent_id: str, T: np.ndarray, stamp_ns: int) -> AssembledMap:
        """A partner's map cut into PACKED slices, each lost with the ``slice_loss`` probability ->
        the map assembled from the others (decoded with its validity even when none was lost)."""
        slices = self.lossy.pack(sweep.indices)
        messages = self.lossy.messages(slices, agent_id=agent_id, T_world_from_lidar=T, stamp_ns=stamp_ns)
        frame = FrameAssembly(messages[0], self.expect)
        for message in messages:
            if self.rng.random() >= self.slice_loss.probability:
                frame.add(check_slice(message, self.expect))
        held = frame.snapshot()
        self.cells_received.append(held.cells_received_fraction)
        return held if held.valid is not None else replace(held, valid=np.ones(held.indices.shape[1:], bool))


def _detect(loaded: LoadedModel, points: list[torch.Tensor], poses: np.ndarray
            ) -> tuple[Detections, list[int], list[int]]:
    """One frame of a model that sends no indices -> detections in the ego frame, bytes per agent."""
    detector, config = loaded.detector, loaded.config
    if config.mode == "ego_only":
        return detector.detect_own_map(detector.bev_features(points[0])), [0] * len(points), [0] * len(points)
    maps = detector.bev_features_batch(points)
    if config.mode == "late":
        per_agent = [detector.detect_own_map(m) for m in maps.split(1)]
        sizes = [late_bytes(len(d.boxes)) for d in per_agent]
        return merge_detections(per_agent, list(poses), config.head), sizes, sizes
    sizes = [raw_bytes(maps.shape[1], maps.shape[2], maps.shape[3])] * len(points)
    return detector.detect_from_bev(list(maps.split(1)), poses), sizes, sizes


Detect = Callable[[list[int]], tuple[Detections, list[int]]]


def _frame_detector(loaded: LoadedModel, wire: _Wire | None, clouds: list[np.ndarray], poses: np.ndarray,
                    stamps_ns: list[int]) -> tuple[Detect, list[int], list[int]]:
    """One frame's clouds (N_a, 4), (A, 4, 4) T_ego_from_agent and sweep stamps (ns), ego first -> a
    function from agent indices (ego first) to the detections fusing those agents and the indices
    of the agents fused (the engine's partner limits may leave some out), and packed and entropy
    bytes per agent (each agent encoded once)."""
    if wire is not None:
        maps, packed, entropy = wire.receive(clouds, poses, stamps_ns)

        def fuse(agents: list[int]) -> tuple[Detections, list[int]]:
            result = wire.fuse([maps[a] for a in agents])
            return result.detections, [int(a) for a in result.fused_agent_ids]

        return fuse, packed, entropy
    points = [torch.from_numpy(c) for c in clouds]
    everyone, (detections, packed, entropy) = list(range(len(points))), _detect(loaded, points, poses)

    def detect(agents: list[int]) -> tuple[Detections, list[int]]:
        if agents == everyone:
            return detections, agents
        return _detect(loaded, [points[a] for a in agents], poses[agents])[0], agents

    return detect, packed, entropy


def nearest_partners(T_ego_from_agent: np.ndarray) -> list[int]:
    """(A, 4, 4) poses, ego first -> the partners' indices (1 .. A-1), nearest to the ego first
    (horizontal distance between the LiDARs; ties keep their order)."""
    distances = np.hypot(T_ego_from_agent[1:, 0, 3], T_ego_from_agent[1:, 1, 3])
    return [int(i) + 1 for i in np.argsort(distances, kind="stable")]


@torch.no_grad()
def evaluate_model(
    loaded: LoadedModel,
    frames: Sequence[CooperativeFrame],
    *,
    name: str,
    progress: bool = True,
    slice_loss: SliceLoss | None = None,
    by_partners: bool = False,
    limits: PartnerLimits = NO_LIMITS,
    merge_ego_detections: bool = False,
) -> dict[str, Any]:
    """Run ``loaded`` on ``frames`` -> the OUT.json mapping (see the evaluation CLI); ``slice_loss``
    (codec models only) loses slices of the partners' maps (module docstring). Every partner in
    range is fused, as the fusion node fuses them, up to ``limits`` (codec models only; module
    docstring); ``by_partners`` adds ``ap_by_partners``: the AP with the ego and its k nearest
    partners, k = 0, 1, ... up to the most any frame has (a frame with fewer fuses all of its own).
    ``merge_ego_detections``: the fusion node's ``fusion.merge_ego_detections`` (codec models with
    an ego-only head; ``runtime/fusion.py``); the result's ``merge_ego_detections`` says whether
    it applied."""
    from revqom_nodes.codec.entropy import empirical_entropy_bits

    config = loaded.config
    range_m, note = eval_range(config.grid)
    accumulator = ApAccumulator(range_m=range_m)
    if slice_loss is not None and loaded.codec_state is None:
        raise EvaluationError(f"{name}: slice loss needs a model that sends codebook indices")
    if limits != NO_LIMITS and loaded.codec_state is None:
        raise EvaluationError(f"{name}: partner limits need a model that sends codebook indices")
    wire = None
    if loaded.codec_state is not None:
        wire = _Wire(loaded, name, slice_loss, limits, merge_ego_detections)
    merges = merge_ego_detections and wire is not None and loaded.detector.ego_head is not None
    packed_all: list[int] = []
    entropy_all: list[int] = []
    partner_bytes: list[tuple[int, int]] = []  # per frame: the fused partners' packed and entropy bytes
    per_frame = []
    curves: list[tuple[list[Detections], np.ndarray]] = []  # per frame: detections with k partners, gt
    loaded.detector.eval()
    for frame in tqdm(frames, desc=f"eval {name}", unit="frame", disable=not progress):
        max_agents = 1 if config.mode == "ego_only" else len(frame.agents)
        sample = frame_to_sample(frame, config.grid, max_agents=max_agents, comm_range_m=loaded.comm_range_m)
        gt = frame.boxes_in(frame.ego.T_world_from_lidar)
        clouds = [crop_to_grid(p, config.grid) for p in sample.points]
        poses = sample.T_ego_from_agent
        kept = sample_agents(frame, max_agents=max_agents, comm_range_m=loaded.comm_range_m)
        stamps_ns = [frame.agents[i].timestamp_us * 1000 for i in kept]
        detect, packed, entropy = _frame_detector(loaded, wire, clouds, poses, stamps_ns)
        detections, fused = detect(list(range(len(clouds))))
        if by_partners:
            nearest = nearest_partners(poses)
            curves.append(([detect([0, *nearest[:k]])[0] for k in range(len(nearest) + 1)], gt))
        accumulator.add_frame(detections.boxes, detections.scores, gt)
        packed_all += packed
        entropy_all += entropy
        partner_bytes.append((sum(packed[a] for a in fused[1:]), sum(entropy[a] for a in fused[1:])))
        pred = np.column_stack([detections.boxes, detections.scores]) if len(detections.boxes) else []
        per_frame.append({
            "frame_id": frame.frame_id,
            "agents": len(clouds),
            "fused": fused,
            "pred": np.round(np.asarray(pred, dtype=np.float64), 5).tolist(),
            "gt": np.round(gt, 5).tolist(),
            "bytes": {"packed": packed, "entropy": entropy},
        })
    if not per_frame:
        raise EvaluationError("no frames to evaluate")
    height, width = config.grid.bev_shape
    mean_packed, mean_entropy = float(np.mean(packed_all)), float(np.mean(entropy_all))
    partner_packed, partner_entropy = (float(v) for v in np.mean(partner_bytes, axis=0))
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
        "partner_bytes_per_frame": {"packed": partner_packed, "entropy": partner_entropy},
        "partners_per_frame": float(np.mean([len(f["fused"]) - 1 for f in per_frame])),
        "partner_limits": limits._asdict(),
        "merge_ego_detections": merges,
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
    if by_partners:
        result["ap_by_partners"] = _ap_by_partners(curves, range_m)
    if slice_loss is not None:
        received = wire.cells_received
        result["slice_loss"] = {
            **slice_loss._asdict(),
            "partner_maps": len(received),
            "mean_cells_received": float(np.mean(received)) if received else None,
        }
    result["per_frame"] = per_frame
    return result


def _ap_by_partners(curves: list[tuple[list[Detections], np.ndarray]], range_m: Sequence[float]
                    ) -> dict[str, dict[str, float]]:
    """Per frame the detections with 0, 1, ... nearest partners and its ground truth -> {k: AP}."""
    most = max(len(detections) for detections, _ in curves) - 1
    result = {}
    for k in range(most + 1):
        accumulator = ApAccumulator(range_m=range_m)
        for detections, gt in curves:
            chosen = detections[min(k, len(detections) - 1)]
            accumulator.add_frame(chosen.boxes, chosen.scores, gt)
        result[str(k)] = accumulator.result()
    return result
