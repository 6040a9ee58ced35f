"""``revqom data {synth,stats,to-bag,agents-launch}``: synthetic datasets, statistics, bag
conversion, and the launch file of a bag's agents with the egos chosen."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


def _delay_range_ms(text: str) -> tuple[float, float]:
    """``D`` or ``A:B`` (milliseconds, 0 <= A <= B) -> (low, high)."""
    try:
        low, high = (float(v) for v in (text.split(":") if ":" in text else (text, text)))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected D or A:B in ms (200, 100:300), got {text!r}") from None
    if not 0.0 <= low <= high:
        raise argparse.ArgumentTypeError(f"expected 0 <= A <= B, got {text!r}")
    return low, high


def _synth(args: argparse.Namespace) -> int:
    from revqom_nodes.data.synthetic import SynthConfig, generate_dataset

    config = SynthConfig(
        vehicle_beams=args.vehicle_beams,
        infrastructure_rings=args.infrastructure_rings,
        partner_delay_ms=args.partner_delay_ms,
        vehicles=args.vehicles,
        rsus=args.rsus,
    )
    summary = generate_dataset(
        args.out,
        args.frames,
        args.seed,
        scenes=args.scenes,
        config=config,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    print(
        json.dumps(
            {
                "root": str(summary.root),
                "frames": summary.frames,
                "scenes": summary.scenes,
                "train": len(summary.train_ids),
                "val": len(summary.val_ids),
                "seconds": round(summary.seconds, 2),
                "frames_per_second": round(summary.frames / summary.seconds, 2),
            }
        )
    )
    return 0


def _stats(args: argparse.Namespace) -> int:
    from revqom_nodes.data.stats import dataset_stats

    stats = dataset_stats(
        args.root,
        args.split,
        max_frames=args.max_frames,
        min_points=args.min_points,
        eval_range=((-args.x_range_m, args.x_range_m), (-args.y_range_m, args.y_range_m)),
        progress=not args.no_progress,
    )
    print(json.dumps(stats, indent=2))
    return 0


def _to_bag(args: argparse.Namespace) -> int:
    from revqom_nodes.data.bag import convert_to_bag

    report = convert_to_bag(
        args.root,
        args.out,
        split=args.split,
        storage=args.storage,
        strict=args.strict,
        progress=not args.no_progress,
    )
    print(
        json.dumps(
            {
                "bag": str(report.path),
                "storage": args.storage,
                "frames": report.frames_written,
                "skipped": len(report.skipped_ids),
                "skipped_ids": report.skipped_ids,
                "messages": report.messages,
                "megabytes": round(report.bytes_written / 1e6, 2),
                "seconds": round(report.seconds, 2),
                "megabytes_per_second": round(report.megabytes_per_second, 2),
            }
        )
    )
    return 0


def _agents_launch(args: argparse.Namespace) -> int:
    from revqom_nodes.data.agents_launch import write_agents_launch

    path = write_agents_launch(args.bag, args.egos, args.out)
    print(f"{path}: run it with `revqom launch scenario.launch.xml bag:={args.bag} agents:={path}`")
    return 0


def _guarded(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Bad input ends the command with its message and exit status 1, not a traceback."""

    def run(args: argparse.Namespace) -> int:
        from revqom_nodes.data.errors import DatasetError

        try:
            return handler(args)
        except (DatasetError, ValueError) as exc:
            log.error("%s", exc)
            return 1

    return run


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="DAIR-V2X-C data: synthetic scenes, statistics, ROS 2 bags")
    verbs = parser.add_subparsers(title="data commands", metavar="VERB", required=True)

    synth = verbs.add_parser("synth", help="write a synthetic dataset in the DAIR-V2X-C layout")
    synth.add_argument("--out", required=True, help="dataset root to create")
    synth.add_argument("--frames", type=int, required=True, help="cooperative frames in total")
    synth.add_argument("--seed", type=int, default=0, help="random seed (same seed, same dataset)")
    synth.add_argument(
        "--scenes", type=int, default=None, help="independent sequences (default: 1 per 20 frames)"
    )
    synth.add_argument("--vehicle-beams", type=int, default=40, help="beams of the ego LiDAR")
    synth.add_argument("--infrastructure-rings", type=int, default=150, help="rings of the pole LiDAR")
    synth.add_argument(
        "--partner-delay-ms", type=_delay_range_ms, default=None, metavar="D|A:B",
        help="every partner's sweep of a frame is D ms older than the ego's (A:B: drawn per frame, seeded); "
        "default: each partner's own clock, 15-50 ms off",
    )
    synth.add_argument(
        "--vehicles", type=int, default=1, help="vehicles with a LiDAR, the ego included"
    )
    synth.add_argument("--rsus", type=int, default=1, help="roadside units, 1 to 4 (one per corner)")
    synth.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    synth.add_argument("--no-progress", action="store_true", help="no progress bar")
    synth.set_defaults(run=_guarded(_synth))

    stats = verbs.add_parser("stats", help="print dataset statistics as one JSON object")
    stats.add_argument("root", help="DAIR-V2X-C root")
    stats.add_argument("--split", choices=("train", "val", "all"), default="all")
    stats.add_argument("--max-frames", type=int, default=None, help="only the first N frames")
    stats.add_argument("--min-points", type=int, default=5, help="points that make a vehicle visible")
    stats.add_argument("--x-range-m", type=float, default=100.0, help="evaluation range: |x| around the ego")
    stats.add_argument("--y-range-m", type=float, default=40.0, help="evaluation range: |y| around the ego")
    stats.add_argument("--no-progress", action="store_true", help="no progress bar")
    stats.set_defaults(run=_guarded(_stats))

    to_bag = verbs.add_parser("to-bag", help="convert a DAIR-V2X-C root into a ROS 2 bag")
    to_bag.add_argument("root", help="DAIR-V2X-C root")
    to_bag.add_argument("out", help="bag folder to create")
    to_bag.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    to_bag.add_argument("--split", choices=("train", "val", "all"), default="all")
    to_bag.add_argument("--strict", action="store_true", help="stop at the first corrupt frame")
    to_bag.add_argument("--no-progress", action="store_true", help="no progress bar")
    to_bag.set_defaults(run=_guarded(_to_bag))

    agents = verbs.add_parser(
        "agents-launch",
        help="write the launch file of a bag's agent nodes and of one fusion node per ego",
        description="to-bag writes BAG/agents.launch.xml with the first vehicle as the ego; this "
        "writes one with the egos given (scenario.launch.xml's `agents` argument).",
    )
    agents.add_argument("bag", help="bag folder written by `revqom data to-bag`")
    agents.add_argument(
        "--egos", type=lambda text: text.split(","), default=None,
        help="comma-separated vehicles that run a fusion node (default: the first vehicle)",
    )
    agents.add_argument("--out", default=None, help="launch file to write (default: BAG/agents.launch.xml)")
    agents.set_defaults(run=_guarded(_agents_launch))
