"""Frozen codec state: model-file round-trip, codebook identity, corruption, receiver-only decoding."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from revqom_nodes.codec.codec import ReVQomCodec
from revqom_nodes.codec.config import CodecConfig
from revqom_nodes.codec.errors import CodecStateError
from revqom_nodes.codec.receiver import CodecDecoder
from revqom_nodes.codec.state import CodecState, compute_codebook_id

CONFIG = CodecConfig(channels=16, channel_reduction_ratio=4, codebook_size=5, num_quantizers=2)


@pytest.fixture
def codec() -> ReVQomCodec:
    torch.manual_seed(0)
    codec = ReVQomCodec(CONFIG).train()
    codec(torch.randn(2, 16, 6, 6))  # move the codebooks away from their initial values
    return codec.eval()


def tables() -> np.ndarray:
    return np.array([[9, 1, 1, 2, 1], [3, 3, 1, 1, 5]])


def saved(tmp_path: Path, state_dict: dict, name: str = "model.pt") -> Path:
    path = tmp_path / name
    torch.save({"codec": state_dict, "config": {"note": "rest of the model file"}}, path)
    return path


def test_model_file_round_trip_keeps_id_and_decoding(codec: ReVQomCodec, tmp_path: Path) -> None:
    state = codec.export_state(entropy_tables=tables())
    loaded = CodecState.load(saved(tmp_path, state.to_dict()))
    assert loaded.codebook_id == state.codebook_id and len(loaded.codebook_id) == 64
    assert loaded.settings == CONFIG
    np.testing.assert_array_equal(loaded.entropy_tables, tables())
    torch.testing.assert_close(loaded.codebooks, codec.quantizer.codebooks)
    receiver = CodecDecoder(loaded)
    assert not any("encoder" in name for name, _ in receiver.named_parameters())
    indices = codec.encode(torch.randn(1, 16, 4, 4))
    decoded = receiver.decode(indices)
    torch.testing.assert_close(decoded.bev, codec.decode(indices))
    assert decoded.valid is None  # every cell arrived
    assert receiver.codebook_id == state.codebook_id and receiver.config == CONFIG


def test_state_without_tables_round_trips(codec: ReVQomCodec) -> None:
    state = codec.export_state()
    assert state.entropy_tables is None
    assert CodecState.from_dict(state.to_dict()).codebook_id == state.codebook_id


def test_id_follows_the_documented_recipe(codec: ReVQomCodec) -> None:
    state = codec.export_state(entropy_tables=tables())
    header = {
        "format": "revqom-codebook-id",
        "version": 1,
        "settings": CONFIG.to_dict(),
        "codebooks": {"shape": [2, 5, 4], "dtype": "<f4"},
        "entropy_tables": {"shape": [2, 5], "dtype": "<i8"},
    }
    digest = hashlib.sha256(json.dumps(header, sort_keys=True, separators=(",", ":")).encode() + b"\n")
    digest.update(state.codebooks.numpy().astype("<f4").tobytes())
    digest.update(tables().astype("<i8").tobytes())
    assert state.codebook_id == digest.hexdigest()


def test_id_changes_with_codebooks_settings_and_tables_not_decoder(codec: ReVQomCodec) -> None:
    base = codec.export_state(entropy_tables=tables())
    changed = base.codebooks.clone()
    changed[1, 2, 3] += 1e-6
    assert compute_codebook_id(CONFIG, changed, base.entropy_tables) != base.codebook_id
    other = CodecConfig(**{**CONFIG.to_dict(), "ema_decay": 0.9})
    assert compute_codebook_id(other, base.codebooks, base.entropy_tables) != base.codebook_id
    other_tables = tables()
    other_tables[0, 0] += 1
    assert compute_codebook_id(CONFIG, base.codebooks, other_tables) != base.codebook_id
    assert compute_codebook_id(CONFIG, base.codebooks, None) != base.codebook_id
    with torch.no_grad():
        codec.decoder.conv2.weight.add_(1.0)
    assert codec.export_state(entropy_tables=tables()).codebook_id == base.codebook_id


def corrupt(data: dict, what: str) -> dict:
    data = dict(data)
    if what == "missing":
        del data["codebooks"]
    elif what == "unknown":
        data["extra"] = 1
    elif what == "tampered":
        data["codebooks"] = data["codebooks"].clone()
        data["codebooks"][0, 0, 0] += 0.5
    elif what == "wrong-shape":
        data["codebooks"] = data["codebooks"][:, :4]
    elif what == "nan":
        data["codebooks"] = data["codebooks"].clone()
        data["codebooks"][0, 0, 0] = float("nan")
    elif what == "wrong-dtype":
        data["codebooks"] = data["codebooks"].double()
    elif what == "id":
        data["codebook_id"] = "0" * 64
    elif what == "version":
        data["version"] = 99
    elif what == "format-tensor":
        data["format"] = torch.zeros(2)
    elif what == "settings-key":
        data["settings"] = {k: v for k, v in data["settings"].items() if k != "ema_decay"}
    elif what == "settings-value":
        data["settings"] = {**data["settings"], "codebook_size": 1}
    elif what == "decoder-key":
        data["decoder"] = {k: v for k, v in data["decoder"].items() if k != "conv1.bias"}
    elif what == "decoder-shape":
        data["decoder"] = {**data["decoder"], "conv1.bias": torch.zeros(3)}
    elif what == "tables-zero":
        data["entropy_tables"] = torch.zeros(2, 5, dtype=torch.int64)
    elif what == "tables-shape":
        data["entropy_tables"] = torch.ones(3, 5, dtype=torch.int64)
    return data


@pytest.mark.parametrize(
    "what",
    [
        "missing",
        "unknown",
        "tampered",
        "wrong-shape",
        "nan",
        "wrong-dtype",
        "id",
        "version",
        "format-tensor",
        "settings-key",
        "settings-value",
        "decoder-key",
        "decoder-shape",
        "tables-zero",
        "tables-shape",
    ],
)
def test_corrupted_state_raises_clear_error(codec: ReVQomCodec, tmp_path: Path, what: str) -> None:
    data = corrupt(codec.export_state(entropy_tables=tables()).to_dict(), what)
    with pytest.raises(CodecStateError):
        CodecState.from_dict(data)
    with pytest.raises(CodecStateError, match=r"model\.pt"):
        CodecState.load(saved(tmp_path, data))


def test_tampered_codebook_reports_id_mismatch(codec: ReVQomCodec) -> None:
    with pytest.raises(CodecStateError, match="codebook_id mismatch"):
        CodecState.from_dict(corrupt(codec.export_state().to_dict(), "tampered"))


def test_unreadable_or_foreign_files_raise(codec: ReVQomCodec, tmp_path: Path) -> None:
    path = saved(tmp_path, codec.export_state().to_dict())
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CodecStateError, match="cannot read"):
        CodecState.load(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(1)}, foreign)
    with pytest.raises(CodecStateError, match="'codec' entry"):
        CodecState.load(foreign)
    with pytest.raises(CodecStateError, match="must be a dict"):
        CodecState.from_dict([1, 2])
