"""The lossy-network test bed end to end: real Fast DDS between two network namespaces, nftables
dropping the infrastructure's packets, monolithic messages against slices at 0, 10 and 30% loss.

A tiny random model with a 128 x 128 grid, K = 64, Q = 3 (a 36,864-byte packed map: 26 IP
fragments as one message, or slices of at most the agent's ``output.slice_bytes``, one IP packet
each; a signed slice of 1,100 bytes took two, see docs/wire-format.md), 8 synthetic frames. Needs
root, nftables (``tools/bootstrap.sh`` installs it as root) and network namespaces; skipped with
the reason otherwise. 40-60 s per run on 2 cores.
"""

from __future__ import annotations

import copy
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from revqom_nodes.defaults import node_defaults
from revqom_nodes.scenario.testbed_net import unavailable_reason

pytestmark = [
    pytest.mark.ros,
    pytest.mark.slow,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]

FRAMES = 8
LOSSES = (0.0, 0.1, 0.3)
TRANSPORTS = {"monolithic": 0, "slices": node_defaults("agent")["output.slice_bytes"]}
RATE = 0.5
SYNC_WAIT_MS = 500.0  # 2.5 sweep periods at RATE: under the fusion's 4 pending ego frames


def _save_model(path: Path) -> tuple[float, float, float, float]:
    """The runtime tests' tiny detector on a 128 x 128 grid with an 18-bit codec; its AP range."""
    import torch

    from revqom_nodes.codec import measure_frequency_tables
    from revqom_nodes.evaluation.runner import eval_range
    from revqom_nodes.model_file import save_model
    from revqom_nodes.perception.config import DetectorConfig
    from revqom_nodes.perception.detector import build_detector
    from revqom_nodes.runtime.model import RuntimeModel
    from tests.runtime.tiny_model import TINY_DETECTOR, tiny_cloud

    settings = copy.deepcopy(TINY_DETECTOR)
    settings["grid"].update(x_range_m=[-51.2, 51.2], y_range_m=[-51.2, 51.2])
    settings["codec"].update(codebook_size=64, num_quantizers=3)
    config = DetectorConfig.from_dict(settings)
    torch.manual_seed(0)
    detector = build_detector(config, "cpu").eval()
    with torch.no_grad():
        clouds = [torch.from_numpy(tiny_cloud(s)) for s in range(3)]
        indices = [detector.codec.encode(detector.bev_features(cloud)) for cloud in clouds]
    model = RuntimeModel.from_detector(detector, measure_frequency_tables(indices, 64, 3), source="tiny")
    save_model(path, model.detector, {"model": config.to_dict()}, codec_state=model.codec_state,
               provenance={"command": "tests.ros.test_testbed"})
    return eval_range(config.grid)[0]


def _our_namespaces() -> list[str]:
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line for line in listing.splitlines() if line.startswith(f"revqom-tb-{os.getpid()}-")]


def _node_processes(base: Path) -> list:
    """Live node processes of this module's runs (their DDS profile lies under ``base``)."""
    import psutil

    found = []
    for process in psutil.process_iter(["cmdline", "environ"]):
        profile = (process.info["environ"] or {}).get("FASTDDS_DEFAULT_PROFILES_FILE", "")
        if profile.startswith(str(base)) and process.is_running() and process.status() != "zombie":
            found.append(process)
    return found


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Every (transport, loss) run of the bed: {"row": its benchmark row, "events": RunEvents}."""
    pytest.importorskip("rclpy")
    from revqom_nodes.data.bag import convert_to_bag
    from revqom_nodes.data.dairv2x import DairV2XReader
    from revqom_nodes.data.synthetic import SynthConfig, generate_dataset
    from revqom_nodes.scenario.bench_loss import run_metrics
    from revqom_nodes.scenario.report import RunEvents, ground_truth
    from revqom_nodes.scenario.testbed import TestbedConfig, run_testbed

    base = tmp_path_factory.mktemp("testbed")
    range_m = _save_model(base / "tiny.pt")
    generate_dataset(base / "dataset", FRAMES, 11, scenes=1, progress=False,
                     config=SynthConfig(vehicle_beams=16, infrastructure_rings=40))
    convert_to_bag(base / "dataset", base / "bag", progress=False)
    reader = DairV2XReader(base / "dataset", "all")
    truth = ground_truth([reader[i] for i in range(len(reader))])
    results = {}
    for transport, slice_bytes in TRANSPORTS.items():
        for loss in LOSSES:
            out_dir = base / f"{transport}_{loss}"
            config = TestbedConfig(bag=base / "bag", model=base / "tiny.pt", out_dir=out_dir,
                                   loss=loss, slice_bytes=slice_bytes, rate=RATE, sync_wait_ms=SYNC_WAIT_MS)
            run = run_testbed(config)
            results[transport, loss] = {
                "run": run,
                "row": run_metrics(run, truth, range_m=range_m, channels=16),
                "events": RunEvents.load(run.events_path),
            }
    results["leftovers"] = {"namespaces": _our_namespaces(), "processes": _node_processes(base)}
    return results


def test_without_loss_every_cell_arrives_and_both_transports_detect_the_same(runs: dict) -> None:
    from revqom_nodes.scenario.report import detections_by_stamp

    for transport in TRANSPORTS:
        row = runs[transport, 0.0]["row"]
        log = runs[transport, 0.0]["run"].log_path
        assert row["launch_status"] == 0, log.read_text()[-3000:]
        assert row["frames_encoded_by_infrastructure"] == FRAMES
        assert row["frames_with_detections"] == FRAMES
        assert row["complete_share"] == row["mean_cells_received"] == 1.0
        assert row["same_sweep"] == {"complete_share": 1.0, "mean_cells_received": 1.0}
        assert row["packets_dropped_share"] == 0.0
    monolithic, slices = (detections_by_stamp(runs[t, 0.0]["events"]) for t in TRANSPORTS)
    assert sorted(monolithic) == sorted(slices) and len(monolithic) == FRAMES
    for stamp, record in monolithic.items():
        assert len(record["scores"]) == len(slices[stamp]["scores"]) > 0
        np.testing.assert_allclose(record["boxes"], slices[stamp]["boxes"], atol=1e-4)
        np.testing.assert_allclose(record["scores"], slices[stamp]["scores"], atol=1e-5)


def test_at_ten_percent_loss_slices_deliver_most_cells_and_whole_messages_rarely_arrive(runs: dict) -> None:
    slices, monolithic = runs["slices", 0.1]["row"], runs["monolithic", 0.1]["row"]
    for transport, row in (("slices", slices), ("monolithic", monolithic)):
        assert row["launch_status"] == 0, runs[transport, 0.1]["run"].log_path.read_text()[-3000:]
        assert 0.05 < row["packets_dropped_share"] < 0.15
        assert row["frames_with_detections"] == FRAMES  # the ego still publishes every frame
    # counting only the paired sweep (a lost one is otherwise replaced by its neighbour)
    slices, monolithic = slices["same_sweep"], monolithic["same_sweep"]
    assert slices["mean_cells_received"] >= 0.85  # one packet per slice: 0.9 expected
    assert monolithic["complete_share"] <= 0.4  # 26 fragments: 0.9 ** 26 = 6.5% expected
    assert slices["mean_cells_received"] - monolithic["complete_share"] >= 0.45


def test_at_thirty_percent_loss_slices_still_deliver_more_than_whole_messages(runs: dict) -> None:
    slices, monolithic = runs["slices", 0.3]["row"], runs["monolithic", 0.3]["row"]
    for transport, row in (("slices", slices), ("monolithic", monolithic)):
        assert row["launch_status"] == 0, runs[transport, 0.3]["run"].log_path.read_text()[-3000:]
    assert 0.2 < slices["packets_dropped_share"] < 0.4
    assert slices["frames_with_detections"] == monolithic["frames_with_detections"] == FRAMES
    assert slices["same_sweep"]["mean_cells_received"] >= 0.5  # 0.7 expected
    assert monolithic["same_sweep"]["mean_cells_received"] <= 0.25  # 0.7 ** 26: none expected


def test_nothing_is_left_behind(runs: dict) -> None:
    assert runs["leftovers"] == {"namespaces": [], "processes": []}
    for key, result in runs.items():
        if key != "leftovers":
            assert result["run"].namespaces[0].startswith(f"revqom-tb-{os.getpid()}-")
