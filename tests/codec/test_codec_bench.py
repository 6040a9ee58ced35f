"""``revqom bench codec``: the command is registered under ``bench`` and reports the reference case."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from revqom_nodes.cli import build_parser, main
from revqom_nodes.codec.bench import run_benchmark
from revqom_nodes.codec.codec import ReVQomCodec
from revqom_nodes.codec.config import CodecConfig


def test_bench_is_a_parent_verb_with_codec_sub_verb(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["bench", "codec", "--device", "cpu", "--repeats", "3"])
    assert (args.device, args.repeats) == ("cpu", 3)
    assert args.run.__module__ == "revqom_nodes.codec.bench"
    assert main(["bench"]) == 2
    assert "codec" in capsys.readouterr().out


def test_reference_case_and_model_files(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = CodecConfig(channels=16, channel_reduction_ratio=4, codebook_size=5, num_quantizers=2)
    state = ReVQomCodec(config).export_state(entropy_tables=[[50, 1, 1, 1, 1], [20, 20, 1, 1, 1]])
    torch.save({"codec": state.to_dict(), "config": {}}, tmp_path / "tiny.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "foreign.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a torch file")

    result = json.loads(json.dumps(run_benchmark(device="cpu", repeats=1, models_dir=tmp_path)))

    sparse, uniform, model = result["cases"]
    for case in (sparse, uniform):
        assert (case["C"], case["Cr"], case["K"], case["n_q"], case["H"], case["W"]) == (
            256,
            16,
            64,
            3,
            128,
            128,
        )
        assert case["bytes_packed"] == 36864 and case["bpp_packed"] == 18.0
        assert case["bytes_raw"] == 256 * 128 * 128 * 4 and case["compression_packed"] == pytest.approx(
            455.11
        )
        assert case["input"] and case["pack_ms"] > 0 and case["unpack_ms"] > 0 and case["decode_ms"] > 0
    assert sparse["encoding_entropy"] == "ENTROPY" and sparse["bytes_entropy"] < sparse["bytes_packed"]
    assert uniform["encoding_entropy"] == "PACKED" and uniform["bytes_entropy"] == 36864
    assert model["codebook_id"] == state.codebook_id and model["K"] == 5 and model["encode_ms"] is None
    assert model["bytes_entropy"] < model["bytes_packed"]
    assert sorted(Path(s["file"]).name for s in result["skipped_models"]) == ["foreign.pt", "garbage.pt"]
