"""A tiny, randomly initialised cooperative detector with a codec, for runtime tests.

32 x 32 BEV cells of 0.8 m (+-12.8 m), C = 16, Cr = 4, K = 16, Q = 2; entropy and context
tables measured on the indices of a few ray-cast sweeps so that every encoding works (its
AgentEncoder codes "entropy" with CONTEXT, as the bundled model's does).
"""

from __future__ import annotations

import numpy as np
import torch

from revqom_nodes.perception.bench import raycast_cloud
from revqom_nodes.perception.config import DetectorConfig
from revqom_nodes.runtime.model import RuntimeModel

TINY_DETECTOR = {
    "grid": {
        "x_range_m": [-12.8, 12.8],
        "y_range_m": [-12.8, 12.8],
        "z_range_m": [-8.0, 2.0],
        "voxel_size_m": [0.4, 0.4, 0.5],
        "bev_stride": 2,
    },
    "backbone": {"channels_3d": [8, 16], "bev_channels": 16, "bev_blocks": 1},
    "fusion": {"kind": "attention", "num_heads": 2},
    "head": {"score_threshold": 0.0, "pre_nms_top_k": 64, "max_detections": 20},
    "codec": {
        "channels": 16,
        "channel_reduction_ratio": 4,
        "codebook_size": 16,
        "num_quantizers": 2,
        "decoder_groups": 4,
    },
}


def tiny_cloud(seed: int, num_points: int = 4000, height_m: float = 1.9) -> np.ndarray:
    """(N, 4) float32 ray-cast sweep, mostly inside the tiny grid."""
    cloud = raycast_cloud(np.random.default_rng(seed), num_points, height_m)
    return cloud[(np.abs(cloud[:, 0]) < 12.8) & (np.abs(cloud[:, 1]) < 12.8)]


def build_tiny_detector(seed: int = 0):
    from revqom_nodes.perception.detector import build_detector

    torch.manual_seed(seed)
    detector = build_detector(DetectorConfig.from_dict(TINY_DETECTOR), "cpu")
    return detector.eval()


def build_tiny_model(seed: int = 0) -> RuntimeModel:
    """The tiny detector, frozen with entropy and context tables measured on three sweeps."""
    from revqom_nodes.codec import measure_frequency_tables
    from revqom_nodes.codec.context import measure_context_tables

    detector = build_tiny_detector(seed)
    codec = detector.codec
    with torch.no_grad():
        indices = [codec.encode(detector.bev_features(torch.from_numpy(tiny_cloud(s)))) for s in range(3)]
    K, Q = codec.config.codebook_size, codec.config.num_quantizers
    tables = measure_frequency_tables(indices, K, Q)
    return RuntimeModel.from_detector(detector, tables, "tiny", measure_context_tables(indices, K, Q))


def save_tiny_model(path, seed: int = 0) -> RuntimeModel:
    """Write the tiny model as a model file (``model_file.save_model``) and return it."""
    from revqom_nodes.model_file import save_model

    model = build_tiny_model(seed)
    save_model(
        path,
        model.detector,
        {"model": model.detector.config.to_dict()},
        codec_state=model.codec_state,
        provenance={"command": "tests.runtime.tiny_model", "seed": seed},
    )
    return model
