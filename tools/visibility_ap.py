"""Where does AP go under pose error: objects the ego sees itself, or those only its partners see?

Reads two or more ``revqom eval --out`` files of the same frames (their ``per_frame`` boxes: the
ground truth in the ego frame and the detections with scores) and the DAIR-V2X-C root they were
evaluated on, counts the ego's own LiDAR points in each ground-truth box, and splits the boxes
into ``ego_sees`` (at least ``--min-points`` points) and ``partners_only`` (fewer). Each subset's
AP counts the detections that belong to it: a detection goes to the ground-truth box it overlaps
most (BEV IoU >= ``ASSIGN_IOU``) and is left out of the other subset's AP; a detection overlapping
no box is a false positive in both. The project's matching and AP (``evaluation/ap.py``, range
of the eval file) otherwise.

    .venv/bin/python tools/visibility_ap.py --data /work/data/synth_val clean.json noise02.json
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from revqom_nodes.data.dairv2x import DairV2XReader
from revqom_nodes.evaluation.ap import ApAccumulator
from revqom_nodes.perception.iou import rotated_iou

ASSIGN_IOU = 0.1  # a detection belongs to the ground-truth box it overlaps most, from this BEV IoU on


def points_in_boxes(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(N, >=3) points and (M, 7) boxes in one frame -> (M,) points inside each box."""
    counts = np.zeros(len(boxes), dtype=np.int64)
    for m, (x, y, z, length, width, height, yaw) in enumerate(boxes):
        dx, dy = points[:, 0] - x, points[:, 1] - y
        along = dx * np.cos(yaw) + dy * np.sin(yaw)
        across = -dx * np.sin(yaw) + dy * np.cos(yaw)
        inside = (np.abs(along) <= length / 2) & (np.abs(across) <= width / 2)
        counts[m] = int((inside & (np.abs(points[:, 2] - z) <= height / 2)).sum())
    return counts


def ego_point_counts(data: str, frame_ids: list[str], gts: list[np.ndarray]) -> list[np.ndarray]:
    """Per evaluated frame, the ego's LiDAR points in each of its ground-truth boxes."""
    reader = DairV2XReader(data, "all")  # revqom eval --split all goes through it in order
    counts = []
    for index, (frame_id, gt) in enumerate(zip(frame_ids, gts, strict=True)):
        frame = reader[index]
        if frame.frame_id != frame_id:
            raise SystemExit(f"frame {index} of {data} is {frame.frame_id}, the eval's {frame_id}")
        counts.append(points_in_boxes(frame.ego.points, gt))
    return counts


def split_ap(per_frame: list[dict], sees: list[np.ndarray], range_m: list[float]) -> dict[str, dict]:
    """AP of the ``ego_sees`` and ``partners_only`` subsets (module docstring)."""
    subsets = {"ego_sees": ApAccumulator(range_m=range_m), "partners_only": ApAccumulator(range_m=range_m)}
    for frame, ego_sees in zip(per_frame, sees, strict=True):
        gt = np.asarray(frame["gt"], dtype=np.float64).reshape(-1, 7)
        pred = np.asarray(frame["pred"], dtype=np.float64).reshape(-1, 8)
        owner = np.full(len(pred), -1)
        if len(pred) and len(gt):
            iou = rotated_iou(pred[:, :7], gt)
            owner = np.where(iou.max(axis=1) >= ASSIGN_IOU, iou.argmax(axis=1), -1)
        for name, accumulator in subsets.items():
            members = ego_sees if name == "ego_sees" else ~ego_sees
            keep = (owner < 0) | members[np.maximum(owner, 0)] if len(gt) else np.ones(len(pred), bool)
            accumulator.add_frame(pred[keep, :7], pred[keep, 7], gt[members])
    return {name: {"ap": a.result(), "boxes": a.num_gt} for name, a in subsets.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("evals", nargs="+", help="revqom eval --out files of the same frames")
    parser.add_argument("--data", required=True, help="the DAIR-V2X-C root they were evaluated on")
    parser.add_argument("--min-points", type=int, default=5, help="ego points for a box the ego sees")
    args = parser.parse_args()
    results = [json.load(open(path, encoding="utf-8")) for path in args.evals]
    first = results[0]["per_frame"]
    ids = [f["frame_id"] for f in first]
    for path, result in zip(args.evals, results, strict=True):
        if [f["frame_id"] for f in result["per_frame"]] != ids:
            raise SystemExit(f"{path}: not the frames of {args.evals[0]}")
    counts = ego_point_counts(args.data, ids, [np.asarray(f["gt"]).reshape(-1, 7) for f in first])
    sees = [c >= args.min_points for c in counts]
    out = {"data": args.data, "min_points": args.min_points, "assign_iou": ASSIGN_IOU, "evals": {}}
    for path, result in zip(args.evals, results, strict=True):
        split = split_ap(result["per_frame"], sees, result["eval_range_m"])
        out["evals"][path] = {"ap": result["ap"], **split}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
