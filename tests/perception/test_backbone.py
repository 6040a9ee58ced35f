"""Sparse backbone: the direct height compression equals spconv's ``.dense()`` flattened, bit for bit."""

import warnings

import numpy as np
import torch

from revqom_nodes.perception.backbone import height_compression
from revqom_nodes.perception.bench import raycast_cloud
from revqom_nodes.perception.config import DetectorConfig
from revqom_nodes.perception.detector import build_detector
from revqom_nodes.perception.voxelize import voxelize_batch

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import spconv.pytorch as spconv


def test_height_compression_is_dense_flattened_on_a_sweep():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    detector = build_detector(DetectorConfig.from_dict({})).eval()
    backbone = detector.backbone
    clouds = [torch.from_numpy(raycast_cloud(rng, 20_000, height)) for height in (1.9, 6.0)]
    voxels = voxelize_batch(clouds, detector.grid)
    with torch.no_grad():
        sparse = backbone.sparse(
            spconv.SparseConvTensor(voxels.features, voxels.coords, backbone.spatial_shape, voxels.batch_size)
        )
        expected = sparse.dense().flatten(1, 2)
        ours = height_compression(sparse)
    assert ours.shape == (2, backbone.height_channels, *detector.grid.bev_shape)
    assert torch.equal(ours, expected)
    assert (expected != 0).any(dim=1).sum() > 100  # the sweep fills many cells
