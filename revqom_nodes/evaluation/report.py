"""Results of several evaluations as a markdown table, a rate-accuracy plot and a robustness plot (PNG)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

MODE_LABELS = {"revqom": "ReVQom", "raw": "raw-feature fusion", "ego_only": "ego only", "late": "late fusion"}


def row_label(result: dict[str, Any]) -> str:
    """'ReVQom K=64, n_q=3' / 'raw-feature fusion' / ... for one OUT.json mapping."""
    label = MODE_LABELS.get(result["mode"], result["mode"])
    codec = result.get("codec")
    if codec:
        label += f" K={codec['codebook_size']}, n_q={codec['num_quantizers']}"
    return label


def markdown_table(results: Sequence[dict[str, Any]]) -> str:
    """One row per result: AP@0.3/0.5/0.7, bytes per agent per frame (packed, entropy), bpp."""
    lines = [
        "| model | AP@0.3 | AP@0.5 | AP@0.7 | bytes/agent/frame packed | bytes/agent/frame entropy "
        "| bpp packed | bpp entropy | frames |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ap, size, bpp = r["ap"], r["bytes_per_agent_frame"], r["bpp"]
        lines.append(
            f"| {row_label(r)} (`{r['model']}`) | {ap['0.3']:.3f} | {ap['0.5']:.3f} | {ap['0.7']:.3f} "
            f"| {size['packed']:,.0f} | {size['entropy']:,.0f} | {bpp['packed']:.2f} | {bpp['entropy']:.2f} "
            f"| {r['frames']} |"
        )
    return "\n".join(lines) + "\n"


def _save(figure: Any, path: str | Path) -> Path:
    """Write a finished matplotlib figure as a PNG at ``path`` and free it."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def rate_accuracy_plot(results: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """AP@0.5 against entropy-coded bytes per agent per frame (log x); zero-byte rows as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    codec_rows = sorted((r for r in results if r["mode"] == "revqom"),
                        key=lambda r: r["bytes_per_agent_frame"]["entropy"])
    if codec_rows:
        axes.plot([r["bytes_per_agent_frame"]["entropy"] for r in codec_rows],
                  [r["ap"]["0.5"] for r in codec_rows], "o-", label="ReVQom (entropy-coded)")
        axes.plot([r["bytes_per_agent_frame"]["packed"] for r in codec_rows],
                  [r["ap"]["0.5"] for r in codec_rows], "s--", alpha=0.6, label="ReVQom (packed)")
        for r in codec_rows:
            axes.annotate(f"K={r['codec']['codebook_size']}",
                          (r["bytes_per_agent_frame"]["entropy"], r["ap"]["0.5"]),
                          textcoords="offset points", xytext=(4, -12), fontsize=8)
    for r in results:
        size = r["bytes_per_agent_frame"]["entropy"]
        if r["mode"] == "revqom":
            continue
        if size > 0 and math.isfinite(size):
            axes.plot([size], [r["ap"]["0.5"]], "^", markersize=9, label=row_label(r))
        else:
            axes.axhline(r["ap"]["0.5"], color="grey", linestyle=":", label=f"{row_label(r)} (0 bytes)")
    axes.set_xscale("log")
    axes.set_xlabel("bytes per agent per frame")
    axes.set_ylabel("AP@0.5")
    axes.set_title("Rate-accuracy")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    return _save(figure, path)


def robustness_plot(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """AP@0.5 against the partner's delay (no pose noise) and against its pose noise (no delay),
    one line per model, from the ``rows`` of ``revqom eval --robustness``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (by_delay, by_noise) = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        mode = mine[0]["mode"]
        label = f"{MODE_LABELS.get(mode, mode)} ({model})"
        style = "^--" if mode == "ego_only" else "o-"  # dashed: visible where late fusion lies on it
        delayed = sorted((r["delay_ms"], r["ap"]["0.5"]) for r in mine if not any(r["pose_noise"]))
        noisy = sorted((r["pose_noise"][0], r["ap"]["0.5"]) for r in mine if r["delay_ms"] == 0)
        by_delay.plot(*zip(*delayed, strict=True), style, label=label)
        by_noise.plot(*zip(*noisy, strict=True), style, label=label)
    by_delay.set_xlabel("partner delay (ms), no pose noise")
    by_noise.set_xlabel("partner pose noise std (m on x, y and deg on yaw), no delay")
    by_delay.set_ylabel("AP@0.5")
    for axes in (by_delay, by_noise):
        axes.grid(True, alpha=0.3)
    by_noise.legend(fontsize=8)
    figure.suptitle("Robustness to V2X timing and localization error")
    return _save(figure, path)
