"""``revqom bench wire``: payload bytes and coding times of every encoding on a model's real maps.

Every agent's map of every frame (the agents ``revqom eval`` fuses: the ego and the partners in
the model's range, clouds cropped to its grid) is encoded once by the model file's encoder;
then each encoding codes it as a whole map (``wire.encode_payload``) and cut into slices as the
agent node cuts them (``slices.cut_slices``, ``--slice-bytes``, ``--interleave``; the payloads of
a frame's slices summed). Bytes are means per agent per frame; times are the medians per map of
coding and decoding the whole map, on the calling thread (``torch`` and numpy threads set to 1).
Every payload is decoded and checked equal to the map. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from revqom_nodes.defaults import node_defaults

AGENT_DEFAULTS = node_defaults("agent")


def measure(
    model_path: Path, data_root: str, split: str, max_frames: int | None, slice_bytes: int, interleave: int
) -> dict[str, Any]:
    """The JSON object of the module docstring."""
    import torch

    from revqom_nodes.codec.context import CellRun
    from revqom_nodes.codec.slices import cell_order, cut_slices
    from revqom_nodes.codec.wire import Encoding, decode_cells, decode_payload, encode_payload
    from revqom_nodes.data.dairv2x import DairV2XReader
    from revqom_nodes.evaluation.errors import EvaluationError
    from revqom_nodes.model_file import load_model
    from revqom_nodes.perception.sample import crop_to_grid, frame_to_sample

    torch.set_num_threads(1)
    loaded = load_model(model_path, torch.device("cpu"))
    state = loaded.codec_state
    if state is None or state.entropy_tables is None:
        raise EvaluationError(f"{model_path}: the model has no codec with entropy tables")
    K, Q = state.settings.codebook_size, state.settings.num_quantizers
    reader = DairV2XReader(data_root, split)
    frames = len(reader) if max_frames is None else min(max_frames, len(reader))
    maps = []
    with torch.no_grad():
        for i in range(frames):
            frame = reader[i]
            sample = frame_to_sample(frame, loaded.config.grid, max_agents=len(frame.agents),
                                     comm_range_m=loaded.comm_range_m)
            for points in sample.points:
                cloud = torch.from_numpy(crop_to_grid(points, loaded.config.grid))
                maps.append(loaded.detector.encode_agent(cloud)[0].cpu().numpy())
    encodings = [Encoding.PACKED, Encoding.ENTROPY]
    if state.context_tables is not None:
        encodings.append(Encoding.CONTEXT)
    tables = {"frequency_tables": state.entropy_tables, "context_tables": state.context_tables}
    result: dict[str, Any] = {"benchmark": "wire", "model": str(model_path), "codebook_id": state.codebook_id,
                              "data": data_root, "split": split, "maps": len(maps),
                              "slice_bytes": slice_bytes, "interleave": interleave, "encodings": {}}
    for encoding in encodings:
        whole, sliced, slice_counts, fallbacks, encode_ms, decode_ms = [], [], [], 0, [], []
        for indices in maps:
            H, W = indices.shape[1:]
            start = time.perf_counter()
            payload, used = encode_payload(indices, K, encoding, *tables.values())
            encode_ms.append((time.perf_counter() - start) * 1e3)
            start = time.perf_counter()
            decoded = decode_payload(payload, height=H, width=W, num_quantizers=Q, codebook_size=K,
                                     encoding=used, **tables)
            decode_ms.append((time.perf_counter() - start) * 1e3)
            if not np.array_equal(decoded, indices):
                raise EvaluationError(f"{encoding.name}: the round trip changed a map")
            whole.append(len(payload))
            fallbacks += used is not encoding
            pieces = cut_slices(indices, K, slice_bytes, encoding, state.entropy_tables, interleave,
                                state.context_tables)
            flat = indices.reshape(Q, H * W)[:, cell_order(H, W, interleave)]
            for piece in pieces:
                cells = decode_cells(piece.payload, num_cells=piece.num_cells, num_quantizers=Q,
                                     codebook_size=K, encoding=piece.encoding,
                                     run=CellRun(H, W, piece.first_cell, interleave), **tables)
                if len(piece.payload) > slice_bytes or not np.array_equal(
                    cells, flat[:, piece.first_cell : piece.first_cell + piece.num_cells]
                ):
                    raise EvaluationError(f"{encoding.name}: a slice exceeds the budget or decodes wrong")
            sliced.append(sum(len(p.payload) for p in pieces))
            slice_counts.append(len(pieces))
        result["encodings"][encoding.name] = {
            "bytes_per_agent_frame": round(float(np.mean(whole)), 1),
            "bits_per_cell": round(float(np.mean(whole)) * 8 / (H * W), 3),
            "maps_sent_packed": fallbacks,
            "sliced_bytes_per_agent_frame": round(float(np.mean(sliced)), 1),
            "slices_per_map": round(float(np.mean(slice_counts)), 2),
            "encode_ms": round(statistics.median(encode_ms), 3),
            "decode_ms": round(statistics.median(decode_ms), 3),
        }
    return result


def _run(args: argparse.Namespace) -> int:
    from revqom_nodes.data.errors import DatasetError
    from revqom_nodes.evaluation.errors import EvaluationError
    from revqom_nodes.model_file import ModelFileError

    try:
        result = measure(args.model, args.data, args.split, args.frames, args.slice_bytes, args.interleave)
    except (EvaluationError, DatasetError, ModelFileError, ValueError) as exc:
        raise SystemExit(f"revqom bench wire: {exc}") from exc
    print(json.dumps(result))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("wire", help="bytes and coding times of every encoding on real maps")
    parser.add_argument("--model", type=Path, required=True, help="model file with a codec")
    parser.add_argument("--data", required=True, help="DAIR-V2X-C (or synthetic) root")
    parser.add_argument("--split", default="all", help="train, val or all (default: all)")
    parser.add_argument("--frames", type=int, default=None, help="the first N frames (default: all)")
    parser.add_argument("--slice-bytes", type=int, default=AGENT_DEFAULTS["output.slice_bytes"],
                        help="slice budget, bytes (default: the agent node's)")
    parser.add_argument("--interleave", type=int, default=AGENT_DEFAULTS["output.interleave"],
                        help="the slices' cell order (default: the agent node's)")
    parser.set_defaults(run=_run)
