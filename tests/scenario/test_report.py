"""The demo's summary (``scenario/report.py``): bytes per agent per frame sum a frame's slices,
and equal ``revqom eval``'s accounting on the same frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from revqom_nodes.codec.wire import Encoding, packed_size
from revqom_nodes.scenario.report import GroundTruthFrame, RunEvents, frame_payloads, summarize_run

HEIGHT, WIDTH, Q, K = 10, 20, 3, 64


def _slice_record(agent_id: str, stamp_ns: int, index: int, num_slices: int, size: int) -> dict:
    return {
        "kind": "encoded_bev", "agent_id": agent_id, "stamp_ns": stamp_ns, "source_ns": stamp_ns,
        "received_ns": stamp_ns + 1, "slice_index": index, "num_slices": num_slices,
        "payload_bytes": size, "encoding": int(Encoding.ENTROPY), "height": HEIGHT, "width": WIDTH,
        "codebook_size": K, "num_quantizers": Q,
    }


def _events(records: list[dict]) -> RunEvents:
    events = RunEvents()
    for record in records:
        events.by_kind[record["kind"]].append(record)
    return events


def test_bytes_per_frame_sum_the_slices_and_skip_frames_the_recorder_got_in_part() -> None:
    slices = {  # agent -> one list of slice sizes per frame
        "vehicle": [[100, 100, 40], [100, 100, 60]],
        "infrastructure": [[100, 20], [100, 30]],
    }
    records = [
        _slice_record(agent_id, stamp, index, len(sizes), size)
        for agent_id, frames in slices.items()
        for stamp, sizes in enumerate(frames)
        for index, size in enumerate(sizes)
    ]
    records.append(_slice_record("infrastructure", 2, 0, 2, 100))  # its second slice never arrived
    events = _events(records)
    assert frame_payloads(events) == {"infrastructure": [120, 130], "vehicle": [240, 260]}

    summary = summarize_run(events, [], range_m=[-10, -10, 10, 10], channels=8)
    per_agent = summary["bytes_per_agent"]
    assert per_agent["vehicle"]["sent"] == per_agent["vehicle"]["entropy"] == 250
    assert per_agent["infrastructure"]["frames"] == 2 and per_agent["infrastructure"]["messages"] == 5
    assert summary["bytes_per_agent_frame"]["entropy"] == (240 + 260 + 120 + 130) / 4
    assert summary["bpp"]["entropy"] == pytest.approx(187.5 * 8 / (HEIGHT * WIDTH))
    assert summary["bytes_per_agent_frame"]["packed"] == packed_size(HEIGHT, WIDTH, Q, K)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    """The tiny model file and two synthetic frames."""
    from revqom_nodes.data.dairv2x import DairV2XReader
    from revqom_nodes.data.synthetic import SynthConfig, generate_dataset
    from tests.runtime.tiny_model import save_tiny_model

    base = tmp_path_factory.mktemp("report")
    save_tiny_model(base / "tiny.pt")
    config = SynthConfig(vehicle_beams=16, infrastructure_rings=40)
    generate_dataset(base / "dataset", 2, 11, scenes=1, progress=False, config=config)
    reader = DairV2XReader(base / "dataset", "all")
    return base / "tiny.pt", [reader[i] for i in range(len(reader))]


def _recorded(model_path: Path, frames: list, slice_bytes: int) -> tuple[RunEvents, list[int]]:
    """Each agent's sweeps encoded as the agent node does, as recorder records; and the
    AgentStatus.payload_bytes of each (agent, frame)."""
    from revqom_nodes.runtime.encoder import AgentEncoder
    from revqom_nodes.runtime.model import load_runtime_model

    model = load_runtime_model(model_path, "cpu")
    encoder = AgentEncoder(model, Encoding.ENTROPY, slice_bytes)
    height, width = model.grid.bev_shape
    records, statuses = [], []
    for frame in frames:
        for agent in frame.agents:
            sweep = encoder.encode(agent.points)
            statuses.append(sweep.payload_bytes)
            for index, piece in enumerate(sweep.slices):
                record = _slice_record(agent.agent_id, frame.ego.timestamp_us * 1000, index,
                                       len(sweep.slices), len(piece.payload))
                record.update(height=height, width=width, codebook_size=model.settings.codebook_size,
                              num_quantizers=model.settings.num_quantizers)
                records.append(record)
    return _events(records), statuses


def _summary(events: RunEvents, frames: list) -> dict:
    truth = [GroundTruthFrame(f.frame_id, f.ego.timestamp_us * 1000, np.zeros((0, 7))) for f in frames]
    return summarize_run(events, truth, range_m=[-12.8, -12.8, 12.8, 12.8], channels=16)


def test_bytes_equal_revqom_eval_on_the_same_frames(tiny_run: tuple[Path, list]) -> None:
    """One message per map (as ``revqom eval`` counts it): the same bytes and bpp to the byte."""
    from revqom_nodes.evaluation.runner import evaluate_model
    from revqom_nodes.model_file import load_model

    model_path, frames = tiny_run
    offline = evaluate_model(load_model(model_path, "cpu"), frames, name="tiny", progress=False)
    events, statuses = _recorded(model_path, frames, slice_bytes=0)
    summary = _summary(events, frames)
    assert statuses == [b for f in offline["per_frame"] for b in f["bytes"]["entropy"]]
    assert summary["bytes_per_agent_frame"] == offline["bytes_per_agent_frame"]
    assert summary["bpp"] == offline["bpp"]


def test_sliced_bytes_per_frame_equal_the_agent_status(tiny_run: tuple[Path, list]) -> None:
    model_path, frames = tiny_run
    events, statuses = _recorded(model_path, frames, slice_bytes=4)  # the tiny maps code in 8-12 bytes
    assert len(events["encoded_bev"]) > len(statuses)  # several slices per frame
    summary = _summary(events, frames)
    assert summary["bytes_per_agent_frame"]["entropy"] == pytest.approx(np.mean(statuses))


def test_for_ego_keeps_one_fusion_nodes_records_and_every_agents() -> None:
    events = RunEvents()
    for frame_id in ("vehicle_lidar", "vehicle_1_lidar"):
        events.by_kind["detections"].append({"frame_id": frame_id, "stamp_ns": 1})
        events.by_kind["fusion_status"].append({"frame_id": frame_id, "stamp_ns": 1})
    events.by_kind["encoded_bev"] += [{"agent_id": "vehicle"}, {"agent_id": "vehicle_1"}]
    events.by_kind["agent_status"].append({"agent_id": "infrastructure"})
    mine = events.for_ego("vehicle_1_lidar")
    assert [r["frame_id"] for r in mine["detections"]] == [r["frame_id"] for r in mine["fusion_status"]] == [
        "vehicle_1_lidar"]
    assert mine["encoded_bev"] == events["encoded_bev"] and mine["agent_status"] == events["agent_status"]
