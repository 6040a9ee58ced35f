"""``AgentEncoder.warm_up``: the agent node encodes a stand-in sweep before it subscribes."""

from __future__ import annotations

import numpy as np

from revqom_nodes.runtime.encoder import AgentEncoder
from tests.runtime.tiny_model import build_tiny_model, tiny_cloud


def test_warm_up_leaves_every_later_sweep_as_a_fresh_encoder_codes_it() -> None:
    model = build_tiny_model()
    warm, fresh = AgentEncoder(model), AgentEncoder(model)
    warm.warm_up()
    for seed in range(3):
        cloud = tiny_cloud(seed)
        np.testing.assert_array_equal(warm.encode(cloud).indices, fresh.encode(cloud).indices)
        assert warm.encode(cloud).slices == fresh.encode(cloud).slices
