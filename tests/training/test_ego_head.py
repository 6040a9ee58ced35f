"""The ego-only head (issue 14): ``model.ego_head`` and ``train.ego_head_only`` are checked, an old
config has no such head, training moves the ego head alone (from a copy of the cooperative head)
and the exported file keeps the starting model's codec state and codebook id."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL, write_config

from revqom_nodes.data.dairv2x import DairV2XReader
from revqom_nodes.model_file import load_model, read_model_file, save_model
from revqom_nodes.perception.config import DetectorConfig
from revqom_nodes.perception.detector import build_detector, make_frame_input
from revqom_nodes.perception.errors import PerceptionError
from revqom_nodes.training.config import TrainingError, load_config
from revqom_nodes.training.dataset import CooperativeDataset
from revqom_nodes.training.export import export_model
from revqom_nodes.training.train import initialise_from, train, with_max_iters

torch.set_num_threads(1)


def _cooperative_file(path: Path, model: dict = TINY_MODEL) -> Path:
    """A tiny cooperative model file with per-stage tables, as a trained default would be."""
    torch.manual_seed(0)
    detector = build_detector(DetectorConfig.from_dict(model))
    codec = detector.config.codec
    tables = np.arange(1, codec.num_quantizers * codec.codebook_size + 1).reshape(codec.num_quantizers, -1)
    save_model(path, detector, {"model": model}, codec_state=detector.codec.export_state(tables),
               provenance={"command": "test"})
    return path


def test_configs_are_checked_and_old_ones_have_no_ego_head(tiny_root: Path, tmp_path: Path) -> None:
    old = DetectorConfig.from_dict(TINY_MODEL)
    assert not old.ego_head and build_detector(old).ego_head is None
    headed = DetectorConfig.from_dict({**TINY_MODEL, "ego_head": True})
    assert DetectorConfig.from_dict(headed.to_dict()) == headed
    with pytest.raises(PerceptionError, match="ego_head"):
        DetectorConfig.from_dict({**TINY_MODEL, "codec": None, "mode": "ego_only", "ego_head": True})
    for bad in ({"ego_head_blocks": 3}, {"ego_head": True, "ego_head_blocks": -1}):
        with pytest.raises(PerceptionError, match="ego_head_blocks"):
            DetectorConfig.from_dict({**TINY_MODEL, **bad})
    with pytest.raises(TrainingError, match=r"model\.ego_head"):
        load_config(write_config(tmp_path / "a.yaml", tiny_root,
                                 train={"ego_head_only": True, "init_from": "x.pt"}))
    with pytest.raises(TrainingError, match="init_from"):
        load_config(write_config(tmp_path / "b.yaml", tiny_root, model={"ego_head": True},
                                 train={"ego_head_only": True}))


def test_a_deeper_ego_head_starts_as_the_cooperative_head(tmp_path: Path) -> None:
    """Extra blocks start as the identity after the copied ones (dirac convolutions)."""
    model = {**TINY_MODEL, "head": {**TINY_MODEL["head"], "blocks": 1}}
    deeper = build_detector(DetectorConfig.from_dict({**model, "ego_head": True, "ego_head_blocks": 3}))
    initialise_from(deeper, str(_cooperative_file(tmp_path / "coop.pt", model)))
    deeper.eval()
    bev = torch.randn(1, 16, *deeper.grid.bev_shape)
    with torch.no_grad():
        for ego, cooperative in zip(deeper.ego_head(bev), deeper.head(bev), strict=True):
            torch.testing.assert_close(ego, cooperative, atol=5e-3, rtol=5e-3)  # BatchNorm's eps


def test_training_moves_the_ego_head_alone_and_keeps_the_codec(tiny_root: Path, tmp_path: Path) -> None:
    start = _cooperative_file(tmp_path / "coop.pt")
    config = with_max_iters(load_config(write_config(
        tmp_path / "ego.yaml", tiny_root, model={"ego_head": True},
        train={"ego_head_only": True, "init_from": str(start), "max_agents": 1},
    )), 2)
    dataset = CooperativeDataset(DairV2XReader(config.data.root, config.data.split), config.model.grid,
                                 max_agents=1, comm_range_m=100.0, augment=None, seed=config.train.seed)
    source = read_model_file(start)["state_dict"]
    fresh = build_detector(config.model)
    initialise_from(fresh, str(start))
    for key, value in source.items():  # the ego head starts as the cooperative head
        if key.startswith("head."):
            assert torch.equal(fresh.state_dict()[f"ego_{key}"], value), key
    detector = train(config, dataset, tmp_path / "run", progress=False).detector
    state = detector.state_dict()
    for key, value in source.items():  # backbone, codec, fusion and cooperative head: untouched
        assert torch.equal(state[key], value), key
    head_weights = [k for k in source if k.startswith("head.") and k.endswith("weight")]
    assert all(not torch.equal(state[f"ego_{k}"], source[k]) for k in head_weights)  # copied, then trained
    path, _ = export_model(detector, config, tmp_path / "ego.pt", provenance={"command": "test"},
                           dataset=None)
    exported, original = load_model(path), load_model(start)
    assert exported.codebook_id == original.codebook_id and exported.detector.ego_head is not None


def test_training_forward_gives_a_frame_of_the_ego_alone_to_the_ego_head() -> None:
    """Partner dropout with an ego head: the frame of one map gets ``ego_head``'s outputs (as the
    runtime detects it) and trains the backbone through it; a cooperative frame gets ``head``'s."""
    torch.manual_seed(0)
    detector = build_detector(DetectorConfig.from_dict({**TINY_MODEL, "ego_head": True}))
    rng = np.random.default_rng(0)

    def cloud() -> np.ndarray:
        return np.column_stack([rng.uniform(-20, 20, (300, 2)), rng.uniform(-2, 0, 300),
                                rng.uniform(0, 1, 300)])

    partner_pose = np.eye(4)
    partner_pose[:2, 3] = [3.0, -1.0]
    batch = [make_frame_input([cloud(), cloud()], [np.eye(4), partner_pose]),
             make_frame_input([cloud()], [np.eye(4)])]
    detector.eval()
    with torch.no_grad():
        mixed = detector(batch).head
        for frame, (inputs, head) in enumerate(zip(batch, (detector.head, detector.ego_head), strict=True)):
            alone = detector([inputs]).head
            for got, want in zip(mixed, alone, strict=True):
                torch.testing.assert_close(got[frame], want[0])
            own = head(detector._fuse(detector.codec(detector.bev_features_batch(inputs.points)).bev,
                                      inputs.T_ego_from_agent, None))
            torch.testing.assert_close(alone.class_logits, own.class_logits)
    detector.train()
    detector(batch[1:]).head.class_logits.sum().backward()
    assert detector.ego_head.classification.weight.grad is not None
    assert detector.head.classification.weight.grad is None
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in detector.backbone.parameters())
