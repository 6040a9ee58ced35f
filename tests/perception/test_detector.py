"""The detector end to end on tiny shapes: backbone axes, training pass, runtime split == detect()."""

import math

import numpy as np
import pytest
import torch

from revqom_nodes.perception.backbone import SparseBevBackbone, spconv
from revqom_nodes.perception.config import BackboneConfig, DetectorConfig, FusionConfig, HeadConfig
from revqom_nodes.perception.detector import build_detector, make_frame_input
from revqom_nodes.perception.errors import PerceptionError
from revqom_nodes.perception.grid import BevGrid
from revqom_nodes.perception.postprocess import Detections, merge_detections
from revqom_nodes.perception.voxelize import voxelize

try:
    from revqom_nodes.codec import CodecConfig

    CODEC = CodecConfig(channels=16, channel_reduction_ratio=4, codebook_size=8, num_quantizers=2)
except ImportError:  # the codec package is optional for the raw-fusion tests
    CODEC = None

GRID = BevGrid(x_range_m=(-6.4, 6.4), y_range_m=(-6.4, 6.4), z_range_m=(-4.0, 2.0),
               voxel_size_m=(0.4, 0.4, 1.0), bev_stride=2)
BACKBONE = BackboneConfig(channels_3d=(4, 8), bev_channels=16, bev_blocks=1)
# score threshold 0 so that an untrained model still returns boxes to compare
HEAD = HeadConfig(score_threshold=0.0, pre_nms_top_k=64, max_detections=20, nms_iou=0.5)
needs_codec = pytest.mark.skipif(CODEC is None, reason="revqom_nodes.codec not available")


def config(**kwargs) -> DetectorConfig:
    return DetectorConfig(grid=GRID, backbone=BACKBONE, head=HEAD, **kwargs)


def pose(x: float, y: float, yaw: float) -> np.ndarray:
    T = np.eye(4)
    T[:2, :2] = [[math.cos(yaw), -math.sin(yaw)], [math.sin(yaw), math.cos(yaw)]]
    T[:2, 3] = [x, y]
    return T


def cloud(seed: int, n: int = 600) -> np.ndarray:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(-6.0, 6.0, (n, 2))
    return np.column_stack([xy, rng.uniform(-3.0, 1.0, n), rng.uniform(0, 255, n)]).astype(np.float32)


CLOUDS = [cloud(0), cloud(1), cloud(2)]
POSES = [np.eye(4), pose(2.0, -1.0, 0.4), pose(-3.0, 2.0, -2.0)]
GT = np.array([[1.0, 2.0, -1.0, 4.2, 1.9, 1.5, 0.3], [-3.0, -2.0, -0.9, 4.6, 2.0, 1.6, 2.0]])


def assert_same(a: Detections, b: Detections) -> None:
    assert len(a.boxes) > 0 and a.boxes.shape == b.boxes.shape
    np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)


def test_backbone_puts_a_point_at_plus_y_in_a_high_row():
    """A lone point at (x, y) activates BEV sites around (row of y, column of x) after the sparse stages."""
    backbone = SparseBevBackbone(grid=GRID, channels_3d=(4, 4), subm_blocks_per_level=0, bev_channels=4,
                                 bev_blocks=0, algo=spconv.ConvAlgo.Native).eval()
    x_m, y_m = -4.1, 3.3
    voxels = voxelize(torch.tensor([[x_m, y_m, 0.1, 1.0]]), GRID)
    out = backbone.sparse(spconv.SparseConvTensor(voxels.features, voxels.coords, backbone.spatial_shape, 1))
    rows, cols = out.indices[:, 2].numpy(), out.indices[:, 3].numpy()  # active sites (batch, z, y, x)
    row, col = GRID.cell_of(x_m, y_m)
    assert len(rows) > 0
    assert abs(rows.mean() - row) <= 1 and abs(cols.mean() - col) <= 1
    assert row > GRID.bev_shape[0] // 2 > col  # +y is a high row, -x a low column


def test_backbone_output_shape_and_empty_clouds():
    model = build_detector(config()).eval()
    bev = model.bev_features_batch([torch.from_numpy(CLOUDS[0]), torch.zeros(0, 4)])
    assert bev.shape == (2, 16, *GRID.bev_shape)
    empty = model.bev_features(torch.zeros(0, 4))
    assert empty.shape == (1, 16, *GRID.bev_shape) and torch.isfinite(empty).all()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mode": "cooperative"},
        {"mode": "cooperative", "fusion": FusionConfig(kind="max")},
        {"mode": "ego_only"},
        {"mode": "late"},
        pytest.param({"mode": "cooperative", "codec": CODEC}, marks=needs_codec),
    ],
    ids=["cooperative", "max-fusion", "ego_only", "late", "codec"],
)
def test_forward_backward_is_finite(kwargs):
    torch.manual_seed(0)
    model = build_detector(config(**kwargs))
    batch = [make_frame_input(CLOUDS[:2], POSES[:2]), make_frame_input(CLOUDS, POSES)]
    outputs = model(batch)
    losses = model.loss(outputs, [GT, GT[:1]])
    assert all(torch.isfinite(v) for v in losses)
    assert losses.classification > 0 and losses.regression > 0
    losses.total.backward()
    grads = [p.grad for p in model.backbone.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    if kwargs.get("codec") is not None:
        assert losses.commitment > 0 and outputs.perplexity is not None
    expected_views = 5 if kwargs["mode"] == "late" else 2
    assert outputs.head.class_logits.shape == (expected_views, GRID.bev_shape[0] * GRID.bev_shape[1] * 2)


def test_late_mode_moves_ground_truth_into_each_agent_frame():
    model = build_detector(config(mode="late"))
    outputs = model([make_frame_input(CLOUDS[:2], POSES[:2])])
    assert outputs.view_frame == (0, 0)
    np.testing.assert_allclose(outputs.T_view_from_ego[1].numpy() @ POSES[1], np.eye(4), atol=1e-12)


def test_runtime_split_equals_detect_raw_features():
    torch.manual_seed(0)
    model = build_detector(config()).eval()
    maps = [model.bev_features(torch.from_numpy(c)) for c in CLOUDS]
    assert_same(model.detect_from_bev(maps, POSES), model.detect(CLOUDS, POSES))


@needs_codec
def test_runtime_split_equals_detect_with_codec():
    torch.manual_seed(0)
    model = build_detector(config(codec=CODEC))
    model(  # a training pass moves the EMA codebooks off their initialisation
        [make_frame_input(CLOUDS, POSES)]
    )
    model.eval()
    indices = [model.encode_agent(torch.from_numpy(c)) for c in CLOUDS]
    assert indices[0].shape == (1, CODEC.num_quantizers, *GRID.bev_shape) and indices[0].dtype == torch.int64
    maps = [model.codec.decode(i) for i in indices]
    assert_same(model.detect_from_bev(maps, POSES), model.detect(CLOUDS, POSES))


def test_masked_agent_equals_absent_agent():
    torch.manual_seed(0)
    model = build_detector(config()).eval()
    maps = [model.bev_features(torch.from_numpy(c)) for c in CLOUDS[:2]]
    lost = torch.zeros(GRID.bev_shape, dtype=torch.bool)
    masked = model.detect_from_bev(maps, POSES[:2], valid=[None, lost])
    assert_same(masked, model.detect_from_bev(maps[:1], POSES[:1]))


def test_merge_detections_deduplicates_across_agents():
    head = HeadConfig(nms_iou=0.15)
    ego = Detections(np.array([[10.0, 0, -1, 4.5, 2, 1.6, 0.0]], np.float32), np.array([0.6], np.float32))
    other = Detections(  # the same car seen by an agent 10 m ahead, turned by 90 degrees
        np.array([[0.0, 0.0, -1, 4.5, 2, 1.6, -math.pi / 2], [5.0, 5.0, -1, 4.5, 2, 1.6, 0.0]], np.float32),
        np.array([0.9, 0.5], np.float32),
    )
    merged = merge_detections([ego, other], [np.eye(4), pose(10.0, 0.0, math.pi / 2)], head)
    assert len(merged.boxes) == 2
    np.testing.assert_allclose(merged.boxes[0, :2], [10.0, 0.0], atol=1e-5)
    assert merged.scores.tolist() == pytest.approx([0.9, 0.5])
    np.testing.assert_allclose(merged.boxes[1, :2], [5.0, 5.0], atol=1e-5)


def test_mode_checks():
    raw = build_detector(config()).eval()
    with pytest.raises(PerceptionError, match="detect_from_bev"):
        raw.detect_own_map(torch.zeros(1, 16, *GRID.bev_shape))
    with pytest.raises(PerceptionError, match="no codec"):
        raw.encode_agent(torch.from_numpy(CLOUDS[0]))
    late = build_detector(config(mode="late")).eval()
    with pytest.raises(PerceptionError, match="late fusion"):
        late.detect_from_bev([torch.zeros(1, 16, *GRID.bev_shape)], [np.eye(4)])
    assert len(late.detect(CLOUDS, POSES).boxes) > 0
    ego = build_detector(config(mode="ego_only")).eval()
    with pytest.raises(PerceptionError, match="ego's map alone"):
        ego.detect_from_bev([torch.zeros(1, 16, *GRID.bev_shape)] * 2, [np.eye(4)] * 2)
    assert_same(ego.detect(CLOUDS, POSES), ego.detect(CLOUDS[:1], POSES[:1]))


def test_cuda_algorithm_refuses_cpu_tensors():
    model = build_detector(
        DetectorConfig(grid=GRID, backbone=BackboneConfig(channels_3d=(4, 8), bev_channels=16,
                                                          sparse_conv_algo="implicit_gemm"))
    )
    with pytest.raises(PerceptionError, match="CUDA"):
        model.bev_features(torch.from_numpy(CLOUDS[0]))


def test_config_round_trip_and_errors():
    values = {
        "grid": GRID.to_dict(),
        "backbone": {"channels_3d": [4, 8], "bev_channels": 16},
        "fusion": {"kind": "max"},
        "head": {"anchor_z_m": -1.2},
        "mode": "cooperative",
    }
    if CODEC is not None:
        values["codec"] = CODEC.to_dict()
    parsed = DetectorConfig.from_dict(values)
    assert parsed.backbone.channels_3d == (4, 8) and parsed.head.anchor_z_m == -1.2
    assert DetectorConfig.from_dict(parsed.to_dict()) == parsed
    with pytest.raises(PerceptionError, match="unknown head keys"):
        DetectorConfig.from_dict({"head": {"anchor_zz": 1.0}})
    with pytest.raises(PerceptionError, match="unknown mode"):
        DetectorConfig(mode="early")
    with pytest.raises(PerceptionError, match="channels_3d"):
        build_detector(DetectorConfig(grid=GRID, backbone=BackboneConfig(channels_3d=(4, 8, 16))))
    if CODEC is not None:
        with pytest.raises(PerceptionError, match="set codec to null"):
            DetectorConfig(backbone=BACKBONE, codec=CODEC, mode="ego_only")
        with pytest.raises(PerceptionError, match="bev_channels"):
            DetectorConfig(codec=CODEC)


def test_paper_config_is_expressible():
    paper = DetectorConfig.from_dict(
        {
            "grid": {"x_range_m": [-102.4, 102.4], "y_range_m": [-102.4, 102.4], "z_range_m": [-10.0, 6.0],
                     "voxel_size_m": [0.2, 0.2, 0.4], "bev_stride": 8},
            "backbone": {"channels_3d": [16, 32, 64, 64], "subm_blocks_per_level": 2, "bev_channels": 256},
        }
    )
    assert paper.grid.bev_shape == (128, 128) and paper.backbone.bev_channels == 256
