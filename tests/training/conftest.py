"""Shared fixtures of the training tests: a tiny synthetic dataset and a tiny training config."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from revqom_nodes.data.synthetic import SynthConfig, generate_dataset

# Sparse sensors and a small grid keep a training step well under a second on one core.
TINY_SENSORS = SynthConfig(
    vehicle_beams=16,
    vehicle_azimuth_step_deg=1.0,
    infrastructure_rings=40,
    infrastructure_azimuth_step_deg=1.0,
)
TINY_MODEL = {
    "grid": {
        "x_range_m": [-25.6, 25.6],
        "y_range_m": [-12.8, 12.8],
        "z_range_m": [-8.0, 2.0],
        "voxel_size_m": [0.8, 0.8, 1.0],
        "bev_stride": 2,
    },
    "backbone": {"channels_3d": [8, 16], "bev_channels": 16, "bev_blocks": 1},
    "fusion": {"kind": "attention", "num_heads": 2},
    "head": {"anchor_z_m": -1.2},
    "codec": {"channels": 16, "channel_reduction_ratio": 2, "codebook_size": 8, "num_quantizers": 2},
    "mode": "cooperative",
}
TINY_TRAIN = {
    "epochs": 1,
    "batch_size": 2,
    "lr": 0.01,
    "seed": 3,
    "augment": {"flip_probability": 0.5, "rotation_deg": 10.0, "scale_range": [0.95, 1.05]},
    "num_threads": 1,
    "checkpoint_interval": 2,
    "log_interval": 1,
    "entropy_table_frames": 2,
}


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-frame synthetic DAIR-V2X-C root with sparse sensors (read-only for the tests)."""
    root = tmp_path_factory.mktemp("synthetic") / "dair"
    generate_dataset(root, 4, 11, scenes=1, config=TINY_SENSORS, progress=False)
    return root


def write_config(path: Path, root: Path, **overrides: dict) -> Path:
    """A tiny training config at ``path`` (sections of TINY_* updated with ``overrides``)."""
    values = {
        "model": {**TINY_MODEL, **overrides.get("model", {})},
        "train": {**TINY_TRAIN, **overrides.get("train", {})},
        "data": {"root": str(root), "split": "all", "command": "tests/training/conftest.py"},
    }
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    return path


@pytest.fixture
def tiny_config(tmp_path: Path, tiny_root: Path) -> Path:
    return write_config(tmp_path / "tiny.yaml", tiny_root)
