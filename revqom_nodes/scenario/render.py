"""BEV pictures of a run: both agents' points in the ego frame, ground truth and detections.

``render_bev`` writes one PNG per frame (matplotlib, Agg); ``write_gif`` and
``write_montage`` assemble them with Pillow. Pictures draw the detections scored at least
the fusion node's ``output.display_min_score`` (as its RViz markers do; the demo passes it);
AP and the recorded detections keep every box.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from revqom_nodes.geometry import box_corners

AGENT_COLORS = ("#4c72b0", "#dd8452", "#55a868", "#8172b3")
GT_COLOR = "#2ca02c"


def _outline(axes: object, boxes: np.ndarray, color: str, width: float, style: str = "-") -> None:
    for corners in box_corners(boxes)[:, :4, :2] if len(boxes) else []:
        loop = np.vstack([corners, corners[:1]])
        axes.plot(loop[:, 0], loop[:, 1], style, color=color, linewidth=width)
        axes.plot(corners[:2, 0], corners[:2, 1], style, color=color, linewidth=width * 2)  # the front edge


def render_bev(
    path: str | Path,
    points: Sequence[np.ndarray],
    gt_boxes: np.ndarray,
    det_boxes: np.ndarray,
    det_scores: np.ndarray,
    *,
    range_m: Sequence[float],
    title: str,
    min_score: float,
    agent_names: Sequence[str] = ("vehicle", "infrastructure"),
    max_points: int = 40_000,
    size_px: int = 640,
) -> Path:
    """One frame in the ego frame: points (A clouds (N, 3+), ego frame), GT (M, 7), detections (P, 7)
    with their (P,) scores; only detections scored ``min_score`` or more are drawn.

    ``range_m`` (x_min, y_min, x_max, y_max) bounds the view. Returns the written path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x_min, y_min, x_max, y_max = range_m
    aspect = (y_max - y_min) / (x_max - x_min)
    figure, axes = plt.subplots(figsize=(size_px / 100, max(size_px * aspect / 100, 2.5) + 0.6), dpi=100)
    rng = np.random.default_rng(0)
    for a, cloud in enumerate(points):
        cloud = np.asarray(cloud)
        if len(cloud) > max_points:
            cloud = cloud[rng.choice(len(cloud), max_points, replace=False)]
        axes.scatter(
            cloud[:, 0],
            cloud[:, 1],
            s=0.3,
            c=AGENT_COLORS[a % len(AGENT_COLORS)],
            alpha=0.5,
            linewidths=0,
            label=f"{agent_names[a] if a < len(agent_names) else a} points",
        )
    _outline(axes, np.asarray(gt_boxes).reshape(-1, 7), GT_COLOR, 1.2)
    cmap = plt.get_cmap("autumn_r")
    scores = np.asarray(det_scores, np.float64).reshape(-1)
    shown = scores >= min_score
    for box, score in zip(np.asarray(det_boxes).reshape(-1, 7)[shown], scores[shown], strict=True):
        _outline(axes, box[None], matplotlib.colors.to_hex(cmap(float(score))), 1.0, "--")
    axes.plot([], [], "-", color=GT_COLOR, label="ground truth")
    label = f"detections, score >= {min_score:g} (colour: score)"
    axes.plot([], [], "--", color=matplotlib.colors.to_hex(cmap(0.8)), label=label)
    axes.plot([0], [0], marker=(3, 0, -90), color="black", markersize=9)
    axes.set_xlim(x_min, x_max)
    axes.set_ylim(y_min, y_max)
    axes.set_aspect("equal")
    axes.set_xlabel("x (m, ego LiDAR)")
    axes.set_ylabel("y (m)")
    axes.set_title(title, fontsize=9)
    axes.legend(loc="upper right", fontsize=6, markerscale=8, framealpha=0.8)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


def write_gif(paths: Sequence[Path], out: str | Path, *, frame_ms: int = 400) -> Path:
    """PNG frames -> an animated GIF (looping)."""
    from PIL import Image

    images = [Image.open(p).convert("P", palette=Image.Palette.ADAPTIVE) for p in paths]
    out = Path(out)
    images[0].save(out, save_all=True, append_images=images[1:], duration=frame_ms, loop=0)
    return out


def write_montage(paths: Sequence[Path], out: str | Path, *, columns: int = 2) -> Path:
    """PNG frames -> one grid image (row-major, ``columns`` wide)."""
    from PIL import Image

    images = [Image.open(p).convert("RGB") for p in paths]
    width = max(i.width for i in images)
    height = max(i.height for i in images)
    rows = -(-len(images) // columns)
    sheet = Image.new("RGB", (columns * width, rows * height), "white")
    for k, image in enumerate(images):
        sheet.paste(image, ((k % columns) * width, (k // columns) * height))
    out = Path(out)
    sheet.save(out)
    return out
