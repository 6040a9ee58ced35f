"""``revqom bench parity``: the box comparison on hand-made frames; the whole bench on CUDA."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from revqom_nodes.evaluation.parity import _box_differences, run

REPO = Path(__file__).resolve().parents[2]


def _box(x: float, score: float) -> list[float]:
    return [x, 0.0, -1.0, 4.5, 2.0, 1.6, 0.0, score]


def test_matches_confident_boxes_and_ignores_low_scores() -> None:
    cpu = [{"pred": [_box(0.0, 0.9), _box(10.0, 0.8), _box(50.0, 0.1)]}]
    cuda = [{"pred": [_box(10.02, 0.79), _box(0.01, 0.9), _box(-30.0, 0.05)]}]
    result = _box_differences(cpu, cuda, 0.3)
    assert (result["boxes_cpu"], result["boxes_cuda"]) == (2, 2)
    assert result["max_centre_difference_m"] == pytest.approx(0.02)
    assert result["max_score_difference"] == pytest.approx(0.01)


def test_a_box_missing_on_one_device_shows() -> None:
    cpu = [{"pred": [_box(0.0, 0.9), _box(20.0, 0.5)]}, {"pred": []}]
    cuda = [{"pred": [_box(0.0, 0.9)]}, {"pred": [_box(5.0, 0.4)]}]
    result = _box_differences(cpu, cuda, 0.3)
    assert (result["boxes_cpu"], result["boxes_cuda"]) == (2, 2)
    assert result["max_centre_difference_m"] == 0.0  # the extra boxes are counted, not matched


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bundled_model_agrees_on_cuda(tmp_path: Path) -> None:
    from revqom_nodes.data.synthetic import generate_dataset

    generate_dataset(tmp_path / "data", 4, 7, scenes=1, progress=False)
    args = argparse.Namespace(model=str(REPO / "models" / "synthetic_k64.pt"), data=str(tmp_path / "data"),
                              split="all", frames=4, batch=2, repeats=3, threads=2, min_score=0.3)
    result = run(args)
    assert result["bev_max_relative_difference"] < 1e-3
    assert result["indices_equal_fraction"] > 0.99
    for threshold in ("0.3", "0.5"):
        assert abs(result["ap"]["cpu"][threshold] - result["ap"]["cuda"][threshold]) < 0.02
