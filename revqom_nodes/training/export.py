"""After training: the entropy-coding tables, the model file and its provenance file.

``measure_entropy_tables`` runs the trained encoder over the training frames (every agent,
no augmentation) and counts each stage's symbols (``codec.measure_frequency_tables``). The
tables go into the codec state, whose codebook id covers them; ``export_model`` writes
``NAME.pt`` (model_file.py) and ``NAME.provenance.json`` beside it.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import platform
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from revqom_nodes.model_file import read_model_file, save_model
from revqom_nodes.perception.detector import CooperativeDetector
from revqom_nodes.training.config import ResolvedConfig
from revqom_nodes.training.dataset import CooperativeDataset
from revqom_nodes.training.train import REPO_ROOT

log = logging.getLogger(__name__)


def measure_entropy_tables(
    detector: CooperativeDetector, dataset: CooperativeDataset, max_frames: int | None, progress: bool = True
) -> np.ndarray:
    """(Q, K) int64 symbol counts (+1 each) of every agent's indices over the first frames of ``dataset``."""
    from revqom_nodes.codec import measure_frequency_tables

    codec = detector.config.codec
    frames = len(dataset) if max_frames is None else min(max_frames, len(dataset))

    def indices() -> Iterator[torch.Tensor]:
        for i in tqdm(range(frames), desc="entropy tables", unit="frame", disable=not progress):
            for points in dataset[i].points:
                yield detector.encode_agent(torch.from_numpy(points))

    detector.eval()
    return measure_frequency_tables(indices(), codec.codebook_size, codec.num_quantizers)


def git_commit() -> dict[str, Any]:
    """The checkout's commit and whether it had uncommitted changes (None outside git)."""
    def run(*args: str) -> str | None:
        try:
            return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                                  check=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    status = run("status", "--porcelain")
    return {"commit": run("rev-parse", "HEAD"), "dirty": None if status is None else bool(status)}


def export_model(
    detector: CooperativeDetector,
    config: ResolvedConfig,
    path: Path,
    *,
    provenance: dict[str, Any],
    dataset: CooperativeDataset | None,
    progress: bool = True,
) -> tuple[Path, Path]:
    """Measure the tables (codec models), write the model file and ``<stem>.provenance.json``."""
    codec_state = None
    if detector.codec is not None:
        if dataset is None:
            raise ValueError("a codec model needs the training frames to measure its entropy tables")
        tables = measure_entropy_tables(detector, dataset, config.train.entropy_table_frames, progress)
        codec_state = detector.codec.export_state(tables)
    model_id = save_model(path, detector, config.values, codec_state=codec_state, provenance=provenance)
    record = {
        **provenance,
        "model_file": path.name,
        "model_id": model_id,
        "codebook_id": "" if codec_state is None else codec_state.codebook_id,
        "size_bytes": path.stat().st_size,
        "config": config.values,
    }
    provenance_path = path.with_name(f"{path.stem}.provenance.json")
    provenance_path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    log.info("exported %s (%d bytes, model_id %s)", path, record["size_bytes"], model_id[:12])
    return path, provenance_path


def base_provenance(config: ResolvedConfig, config_path: Path, *, steps: int, seconds: float,
                    metrics: dict[str, Any], world_size: int) -> dict[str, Any]:
    """Command, config path, seeds, commit, metrics, time and machine of a training run."""
    initialised_from = None
    if config.train.init_from:
        source = Path(config.train.init_from)
        source = source if source.is_absolute() else REPO_ROOT / source
        initialised_from = {"path": config.train.init_from, "model_id": read_model_file(source)["model_id"]}
    return {
        "command": " ".join(["revqom", *sys.argv[1:]]) if sys.argv else "",
        "config_path": str(config_path),
        "seeds": {"train": config.train.seed},
        "initialised_from": initialised_from,
        "git": git_commit(),
        "metrics": {"final_train_log": metrics},
        "training": {"steps": steps, "seconds": round(seconds, 1), "processes": world_size,
                     "threads_per_process": torch.get_num_threads()},
        "dataset": {"root": config.data.root, "split": config.data.split, "command": config.data.command},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
