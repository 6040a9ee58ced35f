"""Training configuration: layered YAML files resolved once into ``TrainConfig`` + ``DetectorConfig``.

A config file holds up to four top-level keys:

- ``base``: a path (relative to this file) of another config file; its resolved mapping is
  the starting point and this file's mappings are merged into it, key by key (a nested
  mapping merges, anything else, lists and ``null`` included, replaces);
- ``model``: the detector mapping read by ``DetectorConfig.from_dict`` (``grid``, ``backbone``,
  ``fusion``, ``head``, ``codec``, ``mode``, ``ego_head``, ``ego_head_blocks``);
- ``train``: the fields of ``TrainConfig``;
- ``data``: ``root`` and ``split`` of the DAIR-V2X-C training set, and the ``command`` that made it.

Unknown keys are an error at every level. The resolved mapping (no ``base`` key left) is what
goes into the model file, and ``load_config`` of it reproduces the same objects.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from revqom_nodes.perception.config import DetectorConfig
from revqom_nodes.perception.errors import PerceptionError
from revqom_nodes.perception.sample import COMM_RANGE_M
from revqom_nodes.training.errors import TrainingError

TOP_LEVEL_KEYS = ("base", "model", "train", "data")
_MAX_BASE_DEPTH = 8


@dataclass(frozen=True)
class AugmentConfig:
    """Global scene augmentation of the ego frame (see augment.py); all off gives the identity."""

    flip_probability: float = 0.5  # mirror y -> -y
    rotation_deg: float = 45.0  # uniform yaw in [-rotation_deg, rotation_deg]
    scale_range: tuple[float, float] = (0.95, 1.05)

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale_range", tuple(float(v) for v in self.scale_range))
        low, high = self.scale_range
        if not 0.0 <= self.flip_probability <= 1.0:
            raise TrainingError(f"flip_probability must be in [0, 1], got {self.flip_probability}")
        if self.rotation_deg < 0:
            raise TrainingError(f"rotation_deg must be >= 0, got {self.rotation_deg}")
        if not 0 < low <= high:
            raise TrainingError(f"scale_range must be 0 < low <= high, got {self.scale_range}")


@dataclass(frozen=True)
class SliceDropoutConfig:
    """Training for lossy links (augment.py ``draw_slice_valid``): every non-ego agent's map is cut
    into runs of ``cells_per_slice`` cells in row-major order, like the slices of
    codec/slices.py, and each run is lost with probability p, p drawn uniformly in
    [0, max_drop_probability] per agent and frame; fusion ignores the lost cells."""

    max_drop_probability: float = 0.5
    cells_per_slice: int = 512

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_drop_probability <= 1.0:
            raise TrainingError(f"max_drop_probability must be in [0, 1], got {self.max_drop_probability}")
        if isinstance(self.cells_per_slice, bool) or not isinstance(self.cells_per_slice, int) \
                or self.cells_per_slice < 1:
            raise TrainingError(f"cells_per_slice must be a positive int, got {self.cells_per_slice!r}")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, data sampling, checkpointing and logging of one training run."""

    epochs: int = 30
    max_iters: int | None = None  # total optimiser steps; None: epochs * steps per epoch
    batch_size: int = 8  # frames per step per process
    lr: float = 1e-3  # peak learning rate of the one-cycle schedule
    lr_pct_start: float = 0.4  # fraction of the steps spent warming up
    weight_decay: float = 0.01  # AdamW
    grad_clip_norm: float = 35.0
    seed: int = 0
    max_agents: int = 2  # the ego and a random subset of at most max_agents - 1 partners in range
    comm_range_m: float = COMM_RANGE_M  # agents farther from the ego are dropped
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    num_workers: int = 0  # DataLoader worker processes
    num_threads: int = 0  # torch.set_num_threads per process; 0: REVQOM_NUM_THREADS or torch's default
    checkpoint_interval: int = 200  # steps between checkpoints (and one at the end)
    log_interval: int = 20  # steps between log lines
    entropy_table_frames: int | None = None  # training frames measured for the entropy tables; None: all
    init_from: str | None = None  # model file whose matching weights start the run (relative: to the repo)
    slice_dropout: SliceDropoutConfig | None = None  # None: every agent's map arrives whole
    partner_dropout: float = 0.0  # probability that a sample's partners are all removed (ego alone)
    pose_noise: tuple[float, float] = (0.0, 0.0)  # std of the partners' pose error: xy metres, yaw degrees
    partner_delay_ms: float = 0.0  # partners' sweeps up to this much older than the ego's (whole sweeps)
    ego_head_only: bool = False  # train model.ego_head alone on the ego's map alone; the rest frozen

    def __post_init__(self) -> None:
        positive = ("epochs", "batch_size", "max_agents", "checkpoint_interval", "log_interval")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TrainingError(f"train.{name} must be a positive int, got {value!r}")
        for name in ("max_iters", "entropy_table_frames"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise TrainingError(f"train.{name} must be a positive int or null, got {value!r}")
        for name in ("lr", "weight_decay", "grad_clip_norm", "comm_range_m", "lr_pct_start",
                     "partner_delay_ms"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise TrainingError(f"train.{name} must be a finite number, got {value!r}")
            if value < 0:
                raise TrainingError(f"train.{name} must be >= 0, got {value}")
        dropout = self.partner_dropout
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout <= 1.0:
            raise TrainingError(f"train.partner_dropout must be a probability in [0, 1], got {dropout!r}")
        noise = self.pose_noise
        if not (isinstance(noise, (list, tuple)) and len(noise) == 2 and all(
                not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) and v >= 0
                for v in noise)):
            raise TrainingError(f"train.pose_noise must be [xy_m, yaw_deg], both >= 0, got {noise!r}")
        object.__setattr__(self, "pose_noise", (float(noise[0]), float(noise[1])))
        if not 0.0 < self.lr_pct_start < 1.0:
            raise TrainingError(f"train.lr_pct_start must be in (0, 1), got {self.lr_pct_start}")
        if self.num_workers < 0 or self.num_threads < 0:
            raise TrainingError("train.num_workers and train.num_threads must be >= 0")
        if not isinstance(self.ego_head_only, bool):
            raise TrainingError(f"train.ego_head_only must be true or false, got {self.ego_head_only!r}")
        if self.ego_head_only and not self.init_from:
            raise TrainingError("train.ego_head_only trains the ego head of a trained model: set init_from")


@dataclass(frozen=True)
class DataConfig:
    """Where the training frames come from."""

    root: str = ""
    split: str = "train"
    command: str = ""  # how the data set was made (recorded in the provenance)


@dataclass(frozen=True)
class ResolvedConfig:
    """One training run's settings, and the plain mapping they were built from."""

    name: str
    model: DetectorConfig
    train: TrainConfig
    data: DataConfig
    values: dict[str, Any]  # resolved: keys "model", "train", "data"; what the model file stores


def _check_keys(known: tuple[str, ...] | set[str], values: Mapping[str, Any], where: str) -> None:
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise TrainingError(f"unknown {where} keys {unknown}; valid keys: {sorted(known)}")


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge: nested mappings merge key by key; any other override value replaces."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def read_layered(path: str | Path, _depth: int = 0) -> dict[str, Any]:
    """A config file with its ``base`` chain merged in -> the resolved mapping (no ``base`` key)."""
    path = Path(path)
    if _depth > _MAX_BASE_DEPTH:
        raise TrainingError(f"{path}: more than {_MAX_BASE_DEPTH} levels of 'base' (a cycle?)")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise TrainingError(f"cannot read config {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise TrainingError(f"{path}: invalid YAML: {exc}") from exc
    if not isinstance(values, dict):
        raise TrainingError(f"{path}: a config file must hold a mapping, got {type(values).__name__}")
    _check_keys(TOP_LEVEL_KEYS, values, f"{path} top-level")
    base = values.pop("base", None)
    if base is None:
        return values
    return merge(read_layered(path.parent / str(base), _depth + 1), values)


def _train_config(values: Mapping[str, Any]) -> TrainConfig:
    _check_keys({f.name for f in fields(TrainConfig)}, values, "train")
    values = dict(values)
    if "augment" in values:
        augment = values["augment"] or {}
        _check_keys({f.name for f in fields(AugmentConfig)}, augment, "train.augment")
        values["augment"] = AugmentConfig(**augment)
    if values.get("slice_dropout") is not None:
        dropout = values["slice_dropout"]
        _check_keys({f.name for f in fields(SliceDropoutConfig)}, dropout, "train.slice_dropout")
        values["slice_dropout"] = SliceDropoutConfig(**dropout)
    return TrainConfig(**values)


def config_from_dict(values: Mapping[str, Any], name: str) -> ResolvedConfig:
    """A resolved mapping (keys ``model``, ``train``, ``data``) -> ResolvedConfig."""
    _check_keys(("model", "train", "data"), values, "config top-level")
    try:
        model = DetectorConfig.from_dict(values.get("model") or {})
    except (PerceptionError, ValueError, TypeError) as exc:
        raise TrainingError(f"config {name}: model: {exc}") from exc
    try:
        train = _train_config(values.get("train") or {})
    except TypeError as exc:
        raise TrainingError(f"config {name}: train: {exc}") from exc
    if train.ego_head_only and not model.ego_head:
        raise TrainingError(f"config {name}: train.ego_head_only needs model.ego_head: true")
    data_values = values.get("data") or {}
    _check_keys({f.name for f in fields(DataConfig)}, data_values, "data")
    data = DataConfig(**data_values)
    resolved = {"model": model.to_dict(), "train": _plain(asdict(train)), "data": asdict(data)}
    return ResolvedConfig(name=name, model=model, train=train, data=data, values=resolved)


def load_config(path: str | Path) -> ResolvedConfig:
    """Read, layer and validate a training config file; the run's name is the file's stem."""
    return config_from_dict(read_layered(path), Path(path).stem)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value
