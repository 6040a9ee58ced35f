"""``revqom bench pipeline``: with ``--json`` one JSON object of agent and fusion stages (p50, p95),
end to end, the bytes as sent, and with ``--agents`` the fusion stages per number of agents;
``--scale paper`` builds the paper's detector."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from revqom_nodes.cli import main
from revqom_nodes.scenario.bench_pipeline import AGENT_STAGES, FUSION_STAGES, paper_model
from tests.runtime.tiny_model import save_tiny_model, tiny_cloud


def _check_stages(stages: dict, names: tuple[str, ...]) -> None:
    assert tuple(stages) == names
    for timing in stages.values():
        assert 0 <= timing["p50_ms"] <= timing["p95_ms"]


def test_json_has_the_stages_bytes_and_the_agent_scaling(tmp_path, capsys: pytest.CaptureFixture[str]):
    save_tiny_model(tmp_path / "tiny.pt")
    args = ["bench", "pipeline", "--json", "--model", str(tmp_path / "tiny.pt"), "--device", "cpu",
            "--points", "4000", "--repeats", "2", "--agents", "1,2,3"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["scale"], result["weights"], result["threads"]) == ("today", "trained", 1)
    machine = result["machine"]
    assert machine["logical_cpus"] >= 1 and machine["torch"] == torch.__version__ and machine["cpu"]["name"]
    assert list(result["results"]) == ["cpu"]
    cpu = result["results"]["cpu"]
    _check_stages(cpu["agent"], AGENT_STAGES)
    _check_stages(cpu["fusion"], FUSION_STAGES)
    assert cpu["fusion"]["decode_fuse"]["p50_ms"] >= cpu["fusion"]["decode"]["p50_ms"]
    assert cpu["end_to_end"]["p50_ms"] >= cpu["fusion"]["decode_fuse"]["p50_ms"]
    apart = cpu["end_to_end_agents_apart"]["p50_ms"]  # one agent's encode instead of both
    assert cpu["fusion"]["decode_fuse"]["p50_ms"] < apart < cpu["end_to_end"]["p50_ms"]
    sent = cpu["bytes"]
    assert sent["encoding"] == "entropy"  # the demo's
    assert len(sent["sent_per_agent"]) == 2 and min(sent["slices_per_agent"]) >= 1
    assert sent["sent_mean"] == pytest.approx(np.mean(sent["sent_per_agent"]), abs=0.1)
    assert sent["packed"] == 32 * 32 * 2 * 4 // 8  # H * W * Q * log2(K) bits
    assert cpu["bev_shape"] == [32, 32]
    scaling = cpu["agents"]
    assert scaling["counts"] == [1, 2, 3] and list(scaling["stages"]) == ["1", "2", "3"]
    for stages in scaling["stages"].values():
        _check_stages(stages, FUSION_STAGES)
    assert set(scaling["ms_per_extra_agent"]) == set(scaling["ms_per_extra_agent_iqr"]) == set(FUSION_STAGES)
    for stage, (low, high) in scaling["ms_per_extra_agent_iqr"].items():
        assert low <= scaling["ms_per_extra_agent"][stage] <= high  # the median lies between the quartiles


def test_packed_encoding_sends_the_packed_map_in_slices(tmp_path, capsys: pytest.CaptureFixture[str]):
    save_tiny_model(tmp_path / "tiny.pt")
    args = ["bench", "pipeline", "--json", "--model", str(tmp_path / "tiny.pt"), "--device", "cpu",
            "--points", "4000", "--repeats", "1", "--encoding", "packed", "--agents", "1,2"]
    assert main(args) == 0
    sent = json.loads(capsys.readouterr().out)["results"]["cpu"]["bytes"]
    assert sent["encoding"] == "packed"
    for payload, slices in zip(sent["sent_per_agent"], sent["slices_per_agent"], strict=True):
        # every cell once, each slice rounded up to whole bytes
        assert sent["packed"] <= payload < sent["packed"] + slices


def test_table_without_json(tmp_path, capsys: pytest.CaptureFixture[str]):
    save_tiny_model(tmp_path / "tiny.pt")
    args = ["bench", "pipeline", "--model", str(tmp_path / "tiny.pt"), "--device", "cpu",
            "--points", "4000", "--repeats", "1"]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("today scale, trained, 1 thread(s)")
    assert sum(" p50 " in line for line in lines) == len(AGENT_STAGES) + len(FUSION_STAGES) + 2


def test_paper_scale_is_the_paper_grid_with_random_weights():
    torch.set_num_threads(1)
    model = paper_model("cpu", [tiny_cloud(0, 2000)])
    assert model.grid.bev_shape == (128, 128) and model.grid.cell_size_m == pytest.approx(1.6)
    settings = model.settings
    assert (settings.channels, settings.codebook_size, settings.num_quantizers) == (256, 64, 3)
    assert model.entropy_tables is not None and "random weights" in model.source
    assert model.comm_range_m == 100.0


def test_agent_scaling_takes_the_data_agents_when_there_are_enough(tmp_path, capsys):
    from dataclasses import replace

    from revqom_nodes.data.synthetic import SynthConfig, generate_dataset

    sparse = SynthConfig(vehicle_beams=16, vehicle_azimuth_step_deg=2.0, infrastructure_rings=40,
                         infrastructure_azimuth_step_deg=2.0)
    root = tmp_path / "many"
    generate_dataset(root, 1, 5, scenes=1, config=replace(sparse, vehicles=2, rsus=1), progress=False)
    save_tiny_model(tmp_path / "tiny.pt")
    common = ["bench", "pipeline", "--json", "--model", str(tmp_path / "tiny.pt"), "--device", "cpu",
              "--data", str(root), "--repeats", "1"]
    assert main([*common, "--agents", "1,3"]) == 0
    cpu = json.loads(capsys.readouterr().out)["results"]["cpu"]
    assert len(cpu["bytes"]["sent_per_agent"]) == 3  # the frame's three agents
    assert cpu["agents"]["sweeps"] == "data" and list(cpu["agents"]["stages"]) == ["1", "3"]
    assert main([*common, "--agents", "1,4"]) == 0  # more than the frame has: ray-cast sweeps
    assert json.loads(capsys.readouterr().out)["results"]["cpu"]["agents"]["sweeps"] == "ray-cast"


def test_fusion_process_times_the_nodes_pipe(tmp_path, capsys: pytest.CaptureFixture[str]):
    save_tiny_model(tmp_path / "tiny.pt")
    args = ["bench", "pipeline", "--json", "--model", str(tmp_path / "tiny.pt"), "--device", "cpu",
            "--points", "4000", "--repeats", "2", "--fusion-process"]
    assert main(args) == 0
    cpu = json.loads(capsys.readouterr().out)["results"]["cpu"]
    process = cpu["fusion_process"]
    _check_stages(process, ("transfer", "decode_fuse"))
    assert process["transfer"]["p50_ms"] > 0
    assert process["decode_fuse"]["p50_ms"] >= process["transfer"]["p50_ms"]
    with pytest.raises(SystemExit, match="--fusion-process"):
        main(["bench", "pipeline", "--scale", "paper", "--fusion-process"])
