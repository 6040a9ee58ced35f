"""``revqom eval``: AP and bytes on the wire of model files on a DAIR-V2X-C split.

One model: ``revqom eval --model M --data ROOT [--split val] --out OUT.json [--frames N] [--late]``.
Several: ``revqom eval --sweep M1 M2 M3:late ... --data ROOT --out-dir DIR`` writes one
``NAME.json`` per model, ``results.md`` (markdown table) and ``rate_accuracy.png``. A
``:late`` suffix (or ``--late`` for one model) runs an ego-only model as late fusion.
``revqom eval --tabulate OUT1.json OUT2.json ... --out-dir DIR`` makes the table and the plot
from earlier results without evaluating again. ``--slice-loss P`` (with ``--slice-bytes``,
``--interleave``, ``--loss-seed``) loses each slice of the partners' maps with probability P,
as the lossy-network test bed does for real (``runner.SliceLoss``). ``--max-partners N`` and
``--max-bytes-per-frame B`` (defaults: the fusion node's ``fusion.max_partners`` and
``fusion.max_bytes_per_frame``) limit the partners fused per frame, most new cells per byte first, as the node
does (``runtime.selection``); ``--merge-ego-detections`` (default: the fusion node's
``fusion.merge_ego_detections``) merges the ego-only head's boxes on the ego's map alone into the
cooperative ones, as the node does (``runtime/fusion.py``). ``--delay-ms D`` and
``--pose-noise XY_M,YAW_DEG`` (``--noise-seed``) give the partners older sweeps and noisy
transmitted poses (``robustness``). ``--by-partners`` adds ``ap_by_partners`` (AP with the ego
and its 0, 1, ... nearest partners) on a two-agent set too; with more agents it is always there.
``revqom eval --robustness --model M [--baselines RAW,EGO] --data ROOT --out R.json`` writes
the delay x pose-noise grid of M, raw fusion, late fusion and ego only, and ``R.png`` beside it.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from revqom_nodes.defaults import node_defaults

AGENT_DEFAULTS = node_defaults("agent")  # --slice-loss mirrors the agent node's slices
FUSION_DEFAULTS = node_defaults("fusion")  # --max-partners, --max-bytes-per-frame and
#   --merge-ego-detections mirror the fusion node's

log = logging.getLogger(__name__)


def _spec(text: str, late: bool) -> tuple[Path, bool]:
    if text.endswith(":late"):
        return Path(text[: -len(":late")]), True
    return Path(text), late


def parse_pose_noise(text: str) -> tuple[float, float]:
    """``XY_M,YAW_DEG`` (standard deviations, >= 0) -> (xy_m, yaw_deg)."""
    parts = text.split(",")
    try:
        xy_m, yaw_deg = (float(v) for v in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected XY_M,YAW_DEG (metres on x and y, degrees on yaw, e.g. 0.2,0.2), got {text!r}"
        ) from None
    if xy_m < 0 or yaw_deg < 0:
        raise argparse.ArgumentTypeError(f"standard deviations must be >= 0, got {text!r}")
    return xy_m, yaw_deg


def parse_delay_ms(text: str) -> float:
    """A delay in milliseconds, >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a delay in ms, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"the delay must be >= 0 ms, got {text!r}")
    return value


def _load(path: Path, late: bool, device: str) -> tuple[str, Any]:
    from revqom_nodes.model_file import load_model

    return path.stem + ("_late" if late else ""), load_model(path, device, mode="late" if late else None)


def _evaluate_one(
    path: Path, late: bool, frames: Any, device: str, progress: bool, slice_loss: Any, by_partners: bool,
    limits: Any, merge_ego_detections: bool,
) -> dict[str, Any]:
    from revqom_nodes.evaluation.runner import evaluate_model

    name, loaded = _load(path, late, device)
    result = evaluate_model(loaded, frames, name=name, progress=progress, slice_loss=slice_loss,
                            by_partners=by_partners, limits=limits, merge_ego_detections=merge_ego_detections)
    result["model_file"] = str(path)
    return result


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    keys = ("model", "mode", "ego", "ap", "ap_by_partners", "frames", "bytes_per_agent_frame", "bpp",
            "partner_limits", "merge_ego_detections", "partners_per_frame", "partner_bytes_per_frame",
            "eval_range_m", "entropy_bits_per_stage", "slice_loss", "partner_perturbation")
    return {k: result[k] for k in keys if k in result}


def _write(result: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result) + "\n", encoding="utf-8")


def _run(args: argparse.Namespace) -> int:
    import torch

    from revqom_nodes.data.dairv2x import DairV2XReader
    from revqom_nodes.data.errors import DatasetError
    from revqom_nodes.evaluation.errors import EvaluationError
    from revqom_nodes.model_file import ModelFileError
    from revqom_nodes.process import configure_process
    from revqom_nodes.runtime.errors import RuntimeConfigError
    from revqom_nodes.runtime.selection import NO_LIMITS, PartnerLimits

    if sum(bool(x) for x in (args.model, args.sweep, args.tabulate)) != 1:
        log.error("give exactly one of --model, --sweep or --tabulate")
        return 2
    if args.tabulate:
        if not args.out_dir:
            log.error("--tabulate needs --out-dir DIR")
            return 2
        results = [json.loads(Path(p).read_text(encoding="utf-8")) for p in args.tabulate]
        _report(results, Path(args.out_dir))
        return 0
    if not args.data:
        log.error("--model and --sweep need --data ROOT")
        return 2
    if args.model and not args.out:
        log.error("--model needs --out OUT.json")
        return 2
    if args.sweep and not args.out_dir:
        log.error("--sweep needs --out-dir DIR")
        return 2
    perturbed = args.delay_ms is not None or args.pose_noise is not None
    try:
        limits = PartnerLimits(args.max_partners, args.max_bytes_per_frame).check()
    except RuntimeConfigError as exc:
        log.error("%s", exc)
        return 2
    limited = limits != NO_LIMITS
    if args.robustness and (args.sweep or args.late or perturbed or args.slice_loss is not None or limited):
        log.error("--robustness runs its own grid: no --sweep, --late, --delay-ms, --pose-noise, "
                  "--slice-loss, --max-partners or --max-bytes-per-frame")
        return 2
    if args.slice_loss is not None and not 0.0 <= args.slice_loss <= 1.0:
        log.error("--slice-loss must be a share in [0, 1], got %s", args.slice_loss)
        return 2
    slice_loss = None
    if args.slice_loss is not None:
        from revqom_nodes.evaluation.runner import SliceLoss

        slice_loss = SliceLoss(args.slice_loss, args.slice_bytes, args.interleave, args.loss_seed)
    configure_process(args.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    try:
        reader = DairV2XReader(args.data, args.split)
        count = len(reader) if args.frames is None else min(args.frames, len(reader))
        ego = args.ego or reader.agents[0][0]
        eager = [reader.ego_frame(i, ego) for i in range(count)] if count <= 64 else None
        frames = eager if eager is not None else _Lazy(reader, count, ego)
        by_partners = args.by_partners or len(reader.agents) > 2  # AP with 0, 1, 2, ... partners
        stamps_us = [reader.timestamps_us(i) for i in range(count)] if perturbed or args.robustness else []
        if args.robustness:
            return _robustness(args, frames, stamps_us, device)
        extra = {"ego": ego}
        if perturbed:
            from revqom_nodes.data.perturbation import partner_schedule
            from revqom_nodes.evaluation.robustness import (
                PartnerPerturbation,
                PerturbedFrames,
                perturbation_summary,
            )

            perturbation = PartnerPerturbation(args.delay_ms or 0.0, *(args.pose_noise or (0.0, 0.0)),
                                               args.noise_seed)
            schedule = partner_schedule(stamps_us, perturbation.delay_ms)
            if not schedule.pairs:
                raise EvaluationError(f"no frame has a partner sweep {perturbation.delay_ms:g} ms older")
            frames = PerturbedFrames(frames, schedule, perturbation)
            extra["partner_perturbation"] = perturbation_summary(perturbation, schedule)
        if args.model:
            path, late = _spec(args.model, args.late)
            result = _evaluate_one(path, late, frames, device, not args.no_progress, slice_loss,
                                   by_partners, limits, args.merge_ego_detections) | extra
            _write(result, Path(args.out))
            print(json.dumps(_summary(result), indent=2))
            if result["eval_range_note"]:
                log.warning("%s", result["eval_range_note"])
            return 0
        out_dir = Path(args.out_dir)
        results = []
        for text in args.sweep:
            path, late = _spec(text, False)
            result = _evaluate_one(path, late, frames, device, not args.no_progress, slice_loss,
                                   by_partners, limits, args.merge_ego_detections) | extra
            _write(result, out_dir / f"{result['model']}.json")
            results.append(result)
            print(json.dumps(_summary(result)))
        _report(results, out_dir)
        return 0
    except (ModelFileError, EvaluationError, DatasetError, OSError, ValueError, KeyError) as exc:
        log.error("%s", exc)
        return 1


def _robustness(args: argparse.Namespace, frames: Any, stamps_us: list[tuple[int, int]], device: str) -> int:
    """The delay x pose-noise grid of --model and the --baselines -> --out R.json and R.png."""
    from revqom_nodes.evaluation.report import robustness_plot
    from revqom_nodes.evaluation.robustness import robustness_grid

    raw, ego = args.baselines
    models = [_load(Path(args.model), False, device), _load(raw, False, device),
              _load(ego, True, device), _load(ego, False, device)]
    grid = robustness_grid(models, frames, stamps_us, noise_seed=args.noise_seed,
                           merge_ego_detections=args.merge_ego_detections, progress=not args.no_progress)
    out = Path(args.out)
    _write({"data": str(args.data), "split": args.split, **grid}, out)
    robustness_plot(grid["rows"], out.with_suffix(".png"))
    print(json.dumps({k: v for k, v in grid.items() if k != "rows"}))
    return 0


def _baselines(text: str) -> tuple[Path, Path]:
    """``RAW,EGO``: the raw-fusion model file and the ego-only one (also run as late fusion)."""
    parts = text.split(",")
    if len(parts) != 2 or not all(parts):
        raise argparse.ArgumentTypeError(f"expected RAW,EGO (two model files), got {text!r}")
    return Path(parts[0]), Path(parts[1])


def _report(results: list[dict[str, Any]], out_dir: Path) -> None:
    """results.md (table and range notes) and rate_accuracy.png in ``out_dir``."""
    from revqom_nodes.evaluation.report import markdown_table, rate_accuracy_plot

    out_dir.mkdir(parents=True, exist_ok=True)
    table = markdown_table(results)
    notes = sorted({r["eval_range_note"] for r in results if r["eval_range_note"]})
    notes_text = "".join(f"\nNote: {n}\n" for n in notes)
    (out_dir / "results.md").write_text(table + notes_text, encoding="utf-8")
    rate_accuracy_plot(results, out_dir / "rate_accuracy.png")
    print(table)


class _Lazy:
    """The first ``count`` frames of a reader seen from ``ego``, read on demand (a sequence for the
    runner)."""

    def __init__(self, reader: Any, count: int, ego: str) -> None:
        self.reader, self.count, self.ego = reader, count, ego

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> Any:
        if not 0 <= index < self.count:
            raise IndexError(index)
        return self.reader.ego_frame(index, self.ego)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help="AP (OpenCOOD protocol) and bytes on the wire of model files")
    parser.add_argument("--model", help="model file (models/NAME.pt); NAME.pt:late runs it as late fusion")
    parser.add_argument("--sweep", nargs="+", help="several model files (each may end in :late)")
    parser.add_argument("--tabulate", nargs="+", help="earlier OUT.json files: table and plot only")
    parser.add_argument("--data", help="DAIR-V2X-C root (for --model and --sweep)")
    parser.add_argument("--split", choices=("train", "val", "all"), default="val")
    parser.add_argument("--out", help="OUT.json for --model")
    parser.add_argument("--out-dir", help="folder for --sweep: NAME.json, results.md, rate_accuracy.png")
    parser.add_argument("--frames", type=int, default=None, help="only the first N frames")
    parser.add_argument(
        "--ego", default=None,
        help="the vehicle whose view is evaluated (default: the dataset's ego, `vehicle`); with more than "
        "two agents the result also has ap_by_partners (AP with the 0, 1, 2, ... nearest partners)",
    )
    parser.add_argument(
        "--by-partners", action="store_true",
        help="ap_by_partners with two agents too: its entry 0 is the ego's map alone, as the fusion node "
        "fuses it when no partner is (missing, stale, out of range)",
    )
    parser.add_argument("--late", action="store_true", help="late fusion with an ego-only model")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--slice-loss", type=float, default=None,
        help="lose each PACKED slice of the partners' maps with this probability (codec models; "
        "the offline twin of `revqom bench loss`)",
    )
    parser.add_argument(
        "--slice-bytes", type=int, default=AGENT_DEFAULTS["output.slice_bytes"],
        help="slice budget for --slice-loss, bytes (default: the agent node's output.slice_bytes)",
    )
    parser.add_argument(
        "--interleave", type=int, default=AGENT_DEFAULTS["output.interleave"],
        help="slice cell order for --slice-loss (default: the agent node's output.interleave)",
    )
    parser.add_argument("--loss-seed", type=int, default=0, help="seed of the lost slices")
    parser.add_argument(
        "--max-partners", type=int, default=FUSION_DEFAULTS["fusion.max_partners"],
        help="partners fused per frame at most, most new occupied cells per byte first (codec models; "
        "default: the fusion node's fusion.max_partners; 0: no limit)",
    )
    parser.add_argument(
        "--max-bytes-per-frame", type=int, default=FUSION_DEFAULTS["fusion.max_bytes_per_frame"],
        help="payload bytes of the partners' maps fused per frame at most, most new occupied cells per "
        "byte first (codec models; default: the fusion node's fusion.max_bytes_per_frame; 0: no limit)",
    )
    parser.add_argument(
        "--merge-ego-detections", action=argparse.BooleanOptionalAction,
        default=FUSION_DEFAULTS["fusion.merge_ego_detections"],
        help="merge the ego-only head's boxes on the ego's map alone into the cooperative ones (models "
        "with an ego-only head; default: the fusion node's fusion.merge_ego_detections)",
    )
    parser.add_argument(
        "--delay-ms", type=parse_delay_ms, default=None,
        help="partners' sweeps this much older than the ego's: the pair round(D / 100 ms) sweeps earlier "
        "(frames without one are dropped and counted)",
    )
    parser.add_argument(
        "--pose-noise", type=parse_pose_noise, default=None, metavar="XY_M,YAW_DEG",
        help="Gaussian noise on the partners' transmitted poses: std in metres on x and y, degrees on yaw",
    )
    parser.add_argument("--noise-seed", type=int, default=0, help="seed of the pose noise")
    parser.add_argument(
        "--robustness", action="store_true",
        help="--model M and the --baselines over delays 0-400 ms x pose noise 0-1.0: --out R.json and R.png",
    )
    parser.add_argument(
        "--baselines", type=_baselines, metavar="RAW,EGO",
        default=(Path("models/synthetic_gpu_raw_ctx.pt"), Path("models/synthetic_gpu_ego_ctx.pt")),
        help="for --robustness: raw-fusion and ego-only model files (the ego-only one also runs as late "
        "fusion)",
    )
    parser.set_defaults(run=_run)
