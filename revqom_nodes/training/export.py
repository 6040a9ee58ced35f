"""After training: the entropy-coding tables, the model file and its provenance file.

``encode_training_maps`` runs the trained encoder over the training frames (every agent, no
augmentation); ``measure_tables`` counts each stage's symbols (``codec.measure_frequency_tables``)
and measures the context model (``codec.context.measure_context_tables``) on those maps. The
tables go into the codec state, whose codebook id covers them; ``export_model`` writes
``NAME.pt`` (model_file.py) and ``NAME.provenance.json`` beside it. ``add_context_tables``
(``revqom context-tables``) adds the context tables to a model file exported before they
existed, from the same training frames, and keeps everything else (weights, model id, the
per-stage tables).
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from revqom_nodes.codec.context import DEFAULT_CONTEXT_SYMBOLS, ContextTables, measure_context_tables
from revqom_nodes.model_file import load_model, read_model_file, save_model
from revqom_nodes.perception.detector import CooperativeDetector
from revqom_nodes.training.config import ResolvedConfig
from revqom_nodes.training.dataset import CooperativeDataset
from revqom_nodes.training.train import REPO_ROOT, repo_path

log = logging.getLogger(__name__)


@torch.no_grad()
def encode_training_maps(
    detector: CooperativeDetector, dataset: CooperativeDataset, max_frames: int | None, progress: bool = True
) -> list[np.ndarray]:
    """Every agent's (Q, H, W) uint16 indices over the first ``max_frames`` frames of ``dataset``
    (None: all)."""
    frames = len(dataset) if max_frames is None else min(max_frames, len(dataset))
    detector.eval()
    return [
        detector.encode_agent(torch.from_numpy(points))[0].cpu().numpy().astype(np.uint16)
        for i in tqdm(range(frames), desc="entropy tables", unit="frame", disable=not progress)
        for points in dataset[i].points
    ]


def measure_tables(
    detector: CooperativeDetector, maps: list[np.ndarray], symbols: int = DEFAULT_CONTEXT_SYMBOLS
) -> tuple[np.ndarray, ContextTables]:
    """The (Q, K) per-stage tables and the context tables (``symbols`` tuples at most) of ``maps``."""
    from revqom_nodes.codec import measure_frequency_tables

    codec = detector.config.codec
    K, Q = codec.codebook_size, codec.num_quantizers
    return measure_frequency_tables(maps, K, Q), measure_context_tables(maps, K, Q, symbols)


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
    """Measure the tables (codec models), write the model file and ``<stem>.provenance.json``.
    ``train.ego_head_only``: the codec was frozen, so ``init_from``'s codec state (tables and
    codebook id included) is kept as it is, and the new file talks to agents running the old one."""
    codec_state = None
    if config.train.ego_head_only:
        codec_state = load_model(repo_path(config.train.init_from), torch.device("cpu")).codec_state
    elif detector.codec is not None:
        if dataset is None:
            raise ValueError("a codec model needs the training frames to measure its entropy tables")
        maps = encode_training_maps(detector, dataset, config.train.entropy_table_frames, progress)
        codec_state = detector.codec.export_state(*measure_tables(detector, maps))
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
        source = repo_path(config.train.init_from)
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


def add_context_tables(
    path: Path, data_root: str, *, symbols: int = DEFAULT_CONTEXT_SYMBOLS, progress: bool = True
) -> dict[str, Any]:
    """Measure the context tables of the model file ``path`` on its training frames (``data_root``,
    the split, frames, agents and seed of its stored config, as ``export_model`` does) and rewrite
    the file and its provenance with them. The weights, model id and per-stage tables stay; the
    codebook id changes. Returns the provenance record."""
    from revqom_nodes.codec import CodecState
    from revqom_nodes.data.dairv2x import DairV2XReader
    from revqom_nodes.training.config import config_from_dict

    loaded = load_model(path, torch.device("cpu"))
    if loaded.codec_state is None:
        raise ValueError(f"{path}: the model has no codec")
    config = config_from_dict(loaded.resolved_config, path.stem)
    dataset = CooperativeDataset(
        DairV2XReader(data_root, config.data.split), config.model.grid, augment=None,
        max_agents=config.train.max_agents, comm_range_m=config.train.comm_range_m, seed=config.train.seed,
    )
    maps = encode_training_maps(loaded.detector, dataset, config.train.entropy_table_frames, progress)
    codec = loaded.detector.config.codec
    tables = measure_context_tables(maps, codec.codebook_size, codec.num_quantizers, symbols)
    state: CodecState = loaded.codec_state.with_context_tables(tables)
    size_before = path.stat().st_size
    added = {
        "command": " ".join(["revqom", *sys.argv[1:]]) if sys.argv else "",
        "dataset": {"root": data_root, "split": config.data.split,
                    "frames": config.train.entropy_table_frames, "maps": len(maps)},
        "symbols": len(tables.alphabet),
        "codebook_id_before": loaded.codebook_id,
        "size_bytes_before": size_before,
        "git": git_commit(),
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    model_id = save_model(path, loaded.detector, loaded.resolved_config, codec_state=state,
                          provenance={**loaded.provenance, "context_tables": added})
    provenance_path = path.with_name(f"{path.stem}.provenance.json")
    record = json.loads(provenance_path.read_text(encoding="utf-8"))
    record.update(model_id=model_id, codebook_id=state.codebook_id, size_bytes=path.stat().st_size,
                  context_tables=added)
    provenance_path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    log.info("%s: context tables of %d tuples from %d maps; %d -> %d bytes, codebook id %s -> %s", path,
             len(tables.alphabet), len(maps), size_before, record["size_bytes"], loaded.codebook_id[:12],
             state.codebook_id[:12])
    return record
