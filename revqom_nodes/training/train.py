"""The training loop: one process (CPU or GPU) or several through ``torchrun`` (DDP).

Order of one run: resolve the config -> seed -> build the detector (identical on every
rank) -> AdamW + one-cycle schedule -> steps -> checkpoints -> export (rank 0, see
export.py). The data order is a permutation of the training frames seeded by
(seed, epoch), cut into global batches of ``batch_size * world_size`` frames of which each
rank takes its slice; augmentation is seeded by (seed, epoch, frame), so a resumed run sees
exactly the samples the uninterrupted run would have seen.

``train.ego_head_only``: only ``ego_head`` trains (in training mode, on each frame's ego map
alone, ``CooperativeDetector.forward(..., ego_alone=True)``); every other weight and buffer
stays as ``init_from`` holds it (frozen, eval mode), the codec's codebooks included.

Replicas stay identical: DDP averages the gradients and broadcasts rank 0's buffers at
every forward; the codec all-reduces its EMA statistics and broadcasts its dead-code
refreshes (codec/rvq.py); BatchNorm running statistics, updated locally during each forward,
are broadcast from rank 0 once more before every checkpoint and at the end. Checkpoints hold
the model, optimizer, scheduler, rank 0's torch RNG state and the step.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import distributed as dist
from tqdm import tqdm

from revqom_nodes.perception.detector import CooperativeDetector, build_detector
from revqom_nodes.perception.sample import batch_inputs
from revqom_nodes.process import configure_process
from revqom_nodes.training.config import ResolvedConfig, config_from_dict
from revqom_nodes.training.dataset import CooperativeDataset, collate_samples
from revqom_nodes.training.errors import TrainingError

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parents[2]

CHECKPOINT_NAME = "checkpoint_last.pt"
LOG_NAME = "train_log.jsonl"
POSTPROCESS_KEYS = ("score_threshold", "nms_iou", "pre_nms_top_k", "max_detections")
LOSS_TERMS = ("total", "classification", "regression", "direction", "commitment", "orthogonal")


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


@dataclass
class TrainResult:
    """What a finished ``train`` call reports (rank 0's view)."""

    detector: CooperativeDetector
    steps: int  # the global step reached
    total_steps: int  # the schedule's length
    seconds: float  # training time summed over the resumed sessions
    metrics: dict[str, float]
    out_dir: Path


def setup_distributed(device: str = "auto") -> DistInfo:
    """Join the ``torchrun`` process group when its variables are set (gloo on CPU, nccl on CUDA)."""
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return DistInfo(device=torch.device("cuda" if use_cuda else "cpu"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local_rank)
    return DistInfo(
        dist.get_rank(), dist.get_world_size(), torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    )


def epoch_batches(num_frames: int, batch_size: int, info: DistInfo, seed: int, epoch: int) -> list[list[int]]:
    """This rank's frame indices of every step of ``epoch`` (the last partial global batch is dropped)."""
    order = np.random.default_rng([seed, epoch]).permutation(num_frames)
    global_batch = batch_size * info.world_size
    steps = num_frames // global_batch
    start = info.rank * batch_size
    return [order[s * global_batch + start :][:batch_size].tolist() for s in range(steps)]


def _broadcast_buffers(model: torch.nn.Module, info: DistInfo) -> None:
    if info.distributed:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def _checkpoint(path: Path, model: torch.nn.Module, optimizer: Any, scheduler: Any, step: int,
                values: dict[str, Any], seconds: float) -> None:
    data = {
        "step": step,
        "seconds": seconds,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "config": values,
    }
    partial = path.with_name(f".{path.name}.partial")
    torch.save(data, partial)
    partial.replace(path)


def load_checkpoint(path: Path, values: dict[str, Any]) -> dict[str, Any]:
    """Read a checkpoint of this run; its config must equal ``values`` except thread and worker
    counts and the head's post-processing (POSTPROCESS_KEYS), which training does not use."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise TrainingError(f"{path}: cannot read the checkpoint ({type(exc).__name__}: {exc})") from exc

    def comparable(v: dict[str, Any]) -> dict[str, Any]:
        train = {k: x for k, x in v["train"].items() if k not in ("num_threads", "num_workers")}
        head = {k: x for k, x in v["model"]["head"].items() if k not in POSTPROCESS_KEYS}
        return {**v, "train": train, "model": {**v["model"], "head": head}}

    stored = config_from_dict(data["config"], str(path)).values  # fields added since: their defaults
    if comparable(stored) != comparable(values):
        raise TrainingError(f"{path}: the checkpoint was written with another config; refusing to resume")
    return data


class _Meter:
    """Running sums of the loss terms and per-stage perplexity between two log lines."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, float] = {}
        self.perplexity: list[float] | None = None
        self.count = 0

    def add(self, losses: Any, perplexity: torch.Tensor | None) -> None:
        for name in LOSS_TERMS:
            self.sums[name] = self.sums.get(name, 0.0) + float(getattr(losses, name).detach())
        if perplexity is not None:
            values = perplexity.detach().cpu().tolist()
            old = self.perplexity or [0.0] * len(values)
            self.perplexity = [a + b for a, b in zip(old, values, strict=True)]
        self.count += 1

    def pop(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: value / self.count for name, value in self.sums.items()}
        if self.perplexity is not None:
            out["perplexity"] = [p / self.count for p in self.perplexity]
        self.reset()
        return out


def _batches_from(
    dataset: CooperativeDataset, info: DistInfo, config: ResolvedConfig, first_step: int, total_steps: int,
    steps_per_epoch: int,
) -> Iterator[tuple[int, list[Any]]]:
    step = first_step
    while step < total_steps:
        epoch, offset = divmod(step, steps_per_epoch)
        dataset.set_epoch(epoch)
        batches = epoch_batches(len(dataset), config.train.batch_size, info, config.train.seed, epoch)
        remaining = batches[offset : offset + total_steps - step]
        loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=remaining, collate_fn=collate_samples, num_workers=config.train.num_workers
        )
        for batch in loader:
            yield step, batch
            step += 1


def train(
    config: ResolvedConfig,
    dataset: CooperativeDataset,
    out_dir: Path,
    *,
    resume: bool = False,
    info: DistInfo | None = None,
    progress: bool = True,
    stop_at: int | None = None,
) -> TrainResult:
    """Train ``config.model`` on ``dataset`` (not augmented by this function: the dataset is).

    ``stop_at``: end this session after that global step (checkpointed there) without
    changing the schedule; ``resume=True`` continues later. ``TrainResult.steps`` tells
    where it stopped.
    """
    info = info or DistInfo()
    train_cfg = config.train
    # torch threads: the config's value, else REVQOM_NUM_THREADS, else torch's default
    configure_process(train_cfg.num_threads or int(os.environ.get("REVQOM_NUM_THREADS", "0")))
    steps_per_epoch = len(dataset) // (train_cfg.batch_size * info.world_size)
    if steps_per_epoch == 0:
        raise TrainingError(
            f"{len(dataset)} frames are fewer than one global batch of "
            f"{train_cfg.batch_size} x {info.world_size} processes"
        )
    total_steps = train_cfg.max_iters or train_cfg.epochs * steps_per_epoch
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path = out_dir / CHECKPOINT_NAME

    detector, optimizer, scheduler, first_step, prior_seconds = _build(
        config, info, total_steps, checkpoint_path if resume else None
    )
    model: torch.nn.Module = detector
    if info.distributed:
        model = torch.nn.parallel.DistributedDataParallel(
            detector, device_ids=[info.device.index] if info.device.type == "cuda" else None
        )
    leader = info.rank == 0
    last_step = max(first_step, total_steps if stop_at is None else min(stop_at, total_steps))
    log_file = (out_dir / LOG_NAME).open("a", encoding="utf-8") if leader else None
    meter, metrics = _Meter(), {}
    started = time.perf_counter()

    def elapsed() -> float:
        return prior_seconds + time.perf_counter() - started

    bar = tqdm(total=total_steps, initial=first_step, desc=config.name, unit="step",
               disable=not (progress and leader))
    ego_alone = train_cfg.ego_head_only
    if ego_alone:
        detector.eval()
        detector.ego_head.train()
    else:
        detector.train()
    try:
        for step, batch in _batches_from(dataset, info, config, first_step, last_step, steps_per_epoch):
            inputs, targets = batch_inputs(batch)
            outputs = model(inputs, ego_alone=ego_alone)
            losses = detector.loss(outputs, targets)
            optimizer.zero_grad(set_to_none=True)
            losses.total.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(detector.parameters(), train_cfg.grad_clip_norm)
            optimizer.step()
            scheduler.step()
            meter.add(losses, outputs.perplexity)
            done = step + 1
            bar.update()
            if done % train_cfg.log_interval == 0 or done == last_step:
                metrics = {"step": done, "epoch": step // steps_per_epoch, "lr": scheduler.get_last_lr()[0],
                           "grad_norm": float(grad_norm), **meter.pop(), "seconds": round(elapsed(), 1)}
                if log_file is not None:
                    log_file.write(json.dumps(metrics) + "\n")
                    log_file.flush()
                    bar.set_postfix(loss=f"{metrics['total']:.3f}", cls=f"{metrics['classification']:.3f}")
                    log.info("%s", json.dumps(metrics))
            if done % train_cfg.checkpoint_interval == 0 or done == last_step:
                _broadcast_buffers(detector, info)
                if leader:
                    _checkpoint(
                        checkpoint_path, detector, optimizer, scheduler, done, config.values, elapsed()
                    )
        _broadcast_buffers(detector, info)
    finally:
        bar.close()
        if log_file is not None:
            log_file.close()
    detector.eval()
    if not metrics and (out_dir / LOG_NAME).is_file():  # resumed after the last step: the last log line
        lines = (out_dir / LOG_NAME).read_text(encoding="utf-8").splitlines()
        metrics = json.loads(lines[-1]) if lines else {}
    return TrainResult(detector, last_step, total_steps, elapsed(), metrics, out_dir)


def _build(config: ResolvedConfig, info: DistInfo, total_steps: int, checkpoint: Path | None
           ) -> tuple[CooperativeDetector, Any, Any, int, float]:
    """Seeded detector, AdamW and one-cycle schedule, restored from ``checkpoint`` when given ->
    (detector, optimizer, scheduler, first step, seconds trained before)."""
    train_cfg = config.train
    torch.manual_seed(train_cfg.seed)
    detector = build_detector(config.model, info.device)
    trained = detector.parameters()
    if train_cfg.ego_head_only:
        detector.requires_grad_(False)
        trained = detector.ego_head.requires_grad_(True).parameters()
    optimizer = torch.optim.AdamW(trained, lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=train_cfg.lr, total_steps=total_steps, pct_start=train_cfg.lr_pct_start,
        div_factor=10.0, final_div_factor=100.0,
    )
    if checkpoint is None:
        if train_cfg.init_from:
            initialise_from(detector, train_cfg.init_from)
        return detector, optimizer, scheduler, 0, 0.0
    if not checkpoint.is_file():
        raise TrainingError(f"--resume: no checkpoint at {checkpoint}")
    state = load_checkpoint(checkpoint, config.values)
    detector.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    log.info("resumed %s at step %d of %d", checkpoint, int(state["step"]), total_steps)
    return detector, optimizer, scheduler, int(state["step"]), float(state["seconds"])


def initialise_from(detector: CooperativeDetector, path: str) -> None:
    """Copy every weight of the model file at ``path`` whose name and shape match ``detector``'s
    (e.g. backbone, fusion and head of a raw-fusion model into a codec model); the rest (the
    codec) keeps its fresh initialisation. An ego-only head the file lacks starts as a copy of
    the file's cooperative head; its blocks beyond the copied ones start with a dirac convolution
    (with the fresh unit BatchNorm, the identity on the non-negative outputs of the block before).
    A relative path is taken from the repository root."""
    from revqom_nodes.model_file import read_model_file

    source = repo_path(path)
    state = read_model_file(source)["state_dict"]
    if detector.ego_head is not None and not any(k.startswith("ego_head.") for k in state):
        state = {**state, **{f"ego_{k}": v for k, v in state.items() if k.startswith("head.")}}
    own = detector.state_dict()
    matching = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not matching:
        raise TrainingError(f"init_from {source}: no weight matches this detector")
    detector.load_state_dict(matching, strict=False)
    if detector.ego_head is not None:
        for name, module in detector.ego_head.blocks.named_modules():
            if isinstance(module, torch.nn.Conv2d) and f"ego_head.blocks.{name}.weight" not in matching:
                torch.nn.init.dirac_(module.weight)
    log.info("initialised %d of %d tensors from %s; fresh: %s", len(matching), len(own), source,
             sorted({k.split(".")[0] for k in own if k not in matching}))


def repo_path(path: str) -> Path:
    """A config's file path: as given when absolute, else from the repository root."""
    return Path(path) if Path(path).is_absolute() else REPO_ROOT / path


def with_max_iters(config: ResolvedConfig, max_iters: int | None) -> ResolvedConfig:
    """``config`` with ``train.max_iters`` replaced (the resolved mapping follows)."""
    if max_iters is None:
        return config
    train = replace(config.train, max_iters=max_iters)
    values = {**config.values, "train": {**config.values["train"], "max_iters": max_iters}}
    return replace(config, train=train, values=values)
