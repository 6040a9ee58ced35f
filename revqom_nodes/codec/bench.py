"""``revqom bench codec``: bytes on the wire, rates and timings of the codec, as one JSON object.

Cases: the reference shape (C=256, Cr=16, K=64, n_q=3, H=W=128) with a randomly initialised
codec fed synthetic sparse BEV maps, the same shape with uniform random indices, and one case
per model file ``models/*.pt`` whose ``"codec"`` entry is a ``CodecState.to_dict()``.
Timings are medians over ``--repeats`` runs after one warm-up; pack/unpack and entropy coding
run on the CPU (numpy, constriction), encode/decode on ``--device``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
REFERENCE_GRID = 128
SYNTHETIC_TABLE_MAPS = 4


def _median_ms(fn: Callable[[], Any], repeats: int, sync: Callable[[], None]) -> float:
    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1e3, 4)


def synthetic_sparse_bev(generator: Any, channels: int, height: int, width: int, blobs: int = 40) -> Any:
    """(1, C, H, W) float32 map, zero except ``blobs`` Gaussian blobs of non-negative features
    (like a LiDAR BEV: most cells empty, objects and structures a few cells wide)."""
    import torch

    rows = torch.arange(height).view(1, height, 1).float()
    cols = torch.arange(width).view(1, 1, width).float()
    centres = torch.rand(blobs, 2, generator=generator) * torch.tensor([height, width])
    radii = 1.0 + 3.0 * torch.rand(blobs, 1, 1, generator=generator)
    distance2 = (rows - centres[:, 0].view(-1, 1, 1)) ** 2 + (cols - centres[:, 1].view(-1, 1, 1)) ** 2
    weights = torch.exp(-distance2 / (2 * radii**2))
    weights = torch.where(weights > 0.05, weights, torch.zeros(()))  # (blobs, H, W), compact support
    features = torch.relu(torch.randn(blobs, channels, generator=generator))  # (blobs, C)
    return torch.einsum("nc,nhw->chw", features, weights).unsqueeze(0)


def _wire_figures(indices: np.ndarray, K: int, tables: np.ndarray, repeats: int) -> dict[str, Any]:
    from revqom_nodes.codec.entropy import empirical_entropy_bits, encode_stage
    from revqom_nodes.codec.wire import Encoding, decode_payload, encode_payload

    Q, H, W = indices.shape
    shape = {"height": H, "width": W, "num_quantizers": Q, "codebook_size": K}
    packed, _ = encode_payload(indices, K, Encoding.PACKED)
    sent, used = encode_payload(indices, K, Encoding.ENTROPY, tables)
    stream = 4 * Q + sum(len(encode_stage(indices[q].reshape(-1), tables[q])) for q in range(Q))
    cells = H * W

    def no_sync() -> None:
        return None

    return {
        "bytes_packed": len(packed),
        "bytes_entropy": len(sent),
        "encoding_entropy": used.name,
        "bytes_entropy_stream": stream,
        "bpp_packed": round(len(packed) * 8 / cells, 4),
        "bpp_entropy": round(len(sent) * 8 / cells, 4),
        "entropy_bound_bpp": round(float(empirical_entropy_bits(indices, K).sum()), 4),
        "pack_ms": _median_ms(lambda: encode_payload(indices, K, Encoding.PACKED), repeats, no_sync),
        "unpack_ms": _median_ms(
            lambda: decode_payload(packed, encoding=Encoding.PACKED, **shape), repeats, no_sync
        ),
        "entropy_encode_ms": _median_ms(
            lambda: encode_payload(indices, K, Encoding.ENTROPY, tables), repeats, no_sync
        ),
        "entropy_decode_ms": _median_ms(
            lambda: decode_payload(sent, encoding=used, frequency_tables=tables, **shape), repeats, no_sync
        ),
    }


def _case(
    config: Any,
    indices: np.ndarray,
    tables: np.ndarray,
    repeats: int,
    device: str,
    timings: dict[str, float | None],
    **extra: Any,
) -> dict[str, Any]:
    Q, H, W = indices.shape
    case: dict[str, Any] = {
        "C": config.channels,
        "Cr": config.reduced_channels,
        "K": config.codebook_size,
        "n_q": Q,
        "H": H,
        "W": W,
        "device": device,
        "bytes_raw": config.channels * H * W * 4,
    }
    case.update(_wire_figures(indices, config.codebook_size, tables, repeats))
    case["compression_packed"] = round(case["bytes_raw"] / case["bytes_packed"], 2)
    case["compression_entropy"] = round(case["bytes_raw"] / case["bytes_entropy"], 2)
    case.update(timings)
    case.update(extra)
    return case


def _reference_cases(device: str, repeats: int, sync: Callable[[], None]) -> list[dict[str, Any]]:
    import torch

    from revqom_nodes.codec import CodecConfig, ReVQomCodec
    from revqom_nodes.codec.entropy import measure_frequency_tables

    config = CodecConfig()
    torch.manual_seed(0)
    codec = ReVQomCodec(config).to(device).eval()
    generator = torch.Generator().manual_seed(0)
    bev = synthetic_sparse_bev(generator, config.channels, REFERENCE_GRID, REFERENCE_GRID).to(device)
    table_maps = [
        codec.encode(
            synthetic_sparse_bev(generator, config.channels, REFERENCE_GRID, REFERENCE_GRID).to(device)
        )
        for _ in range(SYNTHETIC_TABLE_MAPS)
    ]
    tables = measure_frequency_tables(table_maps, config.codebook_size, config.num_quantizers)
    indices_t = codec.encode(bev)
    with torch.no_grad():
        timings = {
            "encode_ms": _median_ms(lambda: codec.encode(bev), repeats, sync),
            "decode_ms": _median_ms(lambda: codec.decode(indices_t), repeats, sync),
        }
    codec_note = "randomly initialised reference codec (seed 0)"
    sparse = _case(
        config,
        indices_t[0].cpu().numpy(),
        tables,
        repeats,
        device,
        timings,
        source="reference",
        input=f"{codec_note} encoding one synthetic sparse BEV map (zeros plus 40 Gaussian blobs of "
        f"non-negative features); entropy tables measured on {SYNTHETIC_TABLE_MAPS} other maps "
        "of the same generator; encode_ms/decode_ms: that codec on that map",
    )
    rng = np.random.default_rng(0)
    shape = (config.num_quantizers, REFERENCE_GRID, REFERENCE_GRID)
    uniform_tables = measure_frequency_tables(
        [rng.integers(0, config.codebook_size, shape)], config.codebook_size, config.num_quantizers
    )
    uniform = _case(
        config,
        rng.integers(0, config.codebook_size, shape),
        uniform_tables,
        repeats,
        device,
        timings,
        source="reference",
        input="uniform i.i.d. random indices; entropy tables measured on another "
        f"uniform map; encode_ms/decode_ms: the {codec_note}",
    )
    return [sparse, uniform]


def _model_case(path: Path, device: str, repeats: int, sync: Callable[[], None]) -> dict[str, Any]:
    """One case for a model file, or {"file", "skipped"} when it is not a codec model file."""
    import torch

    from revqom_nodes.codec import CodecDecoder, CodecStateError
    from revqom_nodes.codec.state import CodecState

    try:
        state = CodecState.load(path)
    except CodecStateError as exc:
        return {"file": str(path), "skipped": str(exc)}
    config = state.settings
    Q, K = config.num_quantizers, config.codebook_size
    rng = np.random.default_rng(0)
    shape = (Q, REFERENCE_GRID, REFERENCE_GRID)
    if state.entropy_tables is not None:
        tables = state.entropy_tables
        probs = tables / tables.sum(axis=1, keepdims=True)
        indices = np.stack([rng.choice(K, size=shape[1:], p=probs[q]) for q in range(Q)])
        source = "indices drawn i.i.d. from the model's stored per-stage frequency tables"
    else:
        from revqom_nodes.codec.entropy import measure_frequency_tables

        indices = rng.integers(0, K, shape)
        tables = measure_frequency_tables([rng.integers(0, K, shape)], K, Q)
        source = "uniform i.i.d. random indices (the model stores no frequency tables)"
    decoder = CodecDecoder(state).to(device)
    indices_t = torch.from_numpy(indices)[None].to(device)
    timings = {"encode_ms": None, "decode_ms": _median_ms(lambda: decoder.decode(indices_t), repeats, sync)}
    return _case(
        config,
        indices,
        tables,
        repeats,
        device,
        timings,
        source=str(path),
        codebook_id=state.codebook_id,
        input=f"{source}, on the {REFERENCE_GRID} x {REFERENCE_GRID} reference grid; encode_ms is null "
        "(a codec state holds no encoder weights); decode_ms: CodecDecoder from the file",
    )


def run_benchmark(
    *, device: str = "auto", repeats: int = 20, models_dir: Path = DEFAULT_MODELS_DIR
) -> dict[str, Any]:
    """All cases and skipped model files as one JSON-serialisable dict."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but CUDA is not available")

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    cases = _reference_cases(device, repeats, sync)
    skipped = []
    for path in sorted(Path(models_dir).glob("*.pt")):
        result = _model_case(path, device, repeats, sync)
        (skipped if "skipped" in result else cases).append(result)
    return {"benchmark": "codec", "repeats": repeats, "cases": cases, "skipped_models": skipped}


def _run(args: argparse.Namespace) -> int:
    if args.repeats < 1:
        raise SystemExit("revqom bench codec: --repeats must be >= 1")
    try:
        result = run_benchmark(device=args.device, repeats=args.repeats, models_dir=args.models_dir)
    except ValueError as exc:
        raise SystemExit(f"revqom bench codec: {exc}") from exc
    print(json.dumps(result))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("codec", help="bytes, rates and timings of the codec (one JSON object)")
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="where encode/decode run (default: cuda when available)",
    )
    parser.add_argument(
        "--repeats", type=int, default=20, help="timed runs per figure; the median is reported"
    )
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=DEFAULT_MODELS_DIR,
        help="directory whose *.pt model files get a case each",
    )
    parser.set_defaults(run=_run)
