"""``revqom train --config config/train/NAME.yaml [--resume] [--out DIR] [--max-iters N]``.

Trains (one process, or one per rank under ``torchrun``), then on rank 0 measures the
entropy tables and exports ``models/NAME.pt`` with ``models/NAME.provenance.json``.

``revqom context-tables --model models/NAME.pt --data ROOT``: adds the context tables (CONTEXT
encoding) to a model file exported before they existed, measured on its training frames.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)
DEFAULT_OUT = Path("out") / "train"


def _run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from revqom_nodes.data.dairv2x import DairV2XReader
    from revqom_nodes.data.errors import DatasetError
    from revqom_nodes.training.config import load_config
    from revqom_nodes.training.dataset import CooperativeDataset
    from revqom_nodes.training.errors import TrainingError
    from revqom_nodes.training.export import REPO_ROOT, base_provenance, export_model
    from revqom_nodes.training.train import setup_distributed, train, with_max_iters

    try:
        config = with_max_iters(load_config(args.config), args.max_iters)
        if args.data is not None:
            data = replace(config.data, root=args.data)
            config = replace(config, data=data, values={**config.values, "data": {**config.values["data"],
                                                                                   "root": args.data}})
        if not config.data.root:
            raise TrainingError("no training data: set data.root in the config or pass --data")
        info = setup_distributed(args.device)
        reader = DairV2XReader(config.data.root, config.data.split)
        common = {"max_agents": config.train.max_agents, "comm_range_m": config.train.comm_range_m,
                  "seed": config.train.seed}
        dataset = CooperativeDataset(reader, config.model.grid, augment=config.train.augment,
                                     slice_dropout=config.train.slice_dropout,
                                     partner_dropout=config.train.partner_dropout,
                                     pose_noise=config.train.pose_noise,
                                     partner_delay_ms=config.train.partner_delay_ms, **common)
        out_dir = Path(args.out) if args.out else DEFAULT_OUT / config.name
        result = train(config, dataset, out_dir, resume=args.resume, info=info, progress=not args.no_progress,
                       stop_at=args.stop_at)
        if result.steps < result.total_steps:
            log.info("stopped at step %d of %d; continue with the same command and --resume",
                     result.steps, result.total_steps)
            return 0
        if info.rank != 0 or args.no_export:
            return 0
        plain = CooperativeDataset(reader, config.model.grid, augment=None, **common)
        provenance = base_provenance(config, Path(args.config), steps=result.steps, seconds=result.seconds,
                                     metrics=result.metrics, world_size=info.world_size)
        target = Path(args.export) if args.export else REPO_ROOT / "models" / f"{config.name}.pt"
        model_path, provenance_path = export_model(
            result.detector, config, target,
            provenance=provenance, dataset=plain, progress=not args.no_progress,
        )
        log.info("model %s, provenance %s", model_path, provenance_path)
        return 0
    except (TrainingError, DatasetError, OSError) as exc:
        log.error("%s", exc)
        return 1


def _run_context_tables(args: argparse.Namespace) -> int:
    from revqom_nodes.codec.context import DEFAULT_CONTEXT_SYMBOLS
    from revqom_nodes.data.errors import DatasetError
    from revqom_nodes.model_file import ModelFileError
    from revqom_nodes.training.export import add_context_tables

    symbols = DEFAULT_CONTEXT_SYMBOLS if args.symbols is None else args.symbols
    try:
        add_context_tables(Path(args.model), args.data, symbols=symbols, progress=not args.no_progress)
    except (ModelFileError, DatasetError, OSError, ValueError) as exc:
        log.error("%s", exc)
        return 1
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train a detector from a config and export its model file")
    parser.add_argument("--config", required=True, help="training config YAML (config/train/NAME.yaml)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint_last.pt")
    parser.add_argument("--out", help=f"checkpoints and log (default: {DEFAULT_OUT}/NAME)")
    parser.add_argument("--max-iters", type=int, default=None, help="total steps (overrides the config)")
    parser.add_argument("--stop-at", type=int, default=None,
                        help="end this session at that step (checkpointed, no export); resume later")
    parser.add_argument("--data", help="training data root (overrides data.root)")
    parser.add_argument("--export", help="model file to write (default: models/NAME.pt in the repository)")
    parser.add_argument("--no-export", action="store_true", help="train only; no model file")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=_run)

    tables = subparsers.add_parser(
        "context-tables",
        help="add the context tables (CONTEXT encoding) to a model file, measured on its training frames",
    )
    tables.add_argument("--model", required=True, help="model file to rewrite (models/NAME.pt)")
    tables.add_argument("--data", required=True, help="the training data root the model was trained on")
    tables.add_argument("--symbols", type=int, default=None,
                        help="joint tuples in the alphabet, at most (default: DEFAULT_CONTEXT_SYMBOLS "
                             "of codec/context.py)")
    tables.add_argument("--no-progress", action="store_true", help="no progress bar")
    tables.set_defaults(run=_run_context_tables)
