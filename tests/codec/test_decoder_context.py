"""A 3x3 first decoder conv: same shapes and wire, the receiver rebuilds what training decoded;
the default (1x1) keeps the first models' settings and codebook ids."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from revqom_nodes.codec import CodecConfig, CodecDecoder, CodecState, ReVQomCodec
from revqom_nodes.codec.state import compute_codebook_id


def tiny(**overrides) -> CodecConfig:
    return CodecConfig(
        **{"channels": 16, "channel_reduction_ratio": 4, "codebook_size": 8, "num_quantizers": 2, **overrides}
    )


def test_context_decoder_keeps_shapes_and_the_receiver_matches_training() -> None:
    torch.manual_seed(0)
    codec = ReVQomCodec(tiny(decoder_kernel_size=3)).eval()
    assert codec.decoder.conv1.weight.shape[-2:] == (3, 3)
    bev = torch.randn(1, 16, 6, 9)
    indices = codec.encode(bev)
    decoded = codec.decode(indices)
    assert indices.shape == (1, 2, 6, 9) and decoded.shape == bev.shape
    state = codec.export_state(np.ones((2, 8), dtype=np.int64))
    receiver = CodecDecoder(CodecState.from_dict(state.to_dict()))
    torch.testing.assert_close(receiver.decode(indices), decoded)


def test_default_kernel_is_left_out_of_the_settings() -> None:
    default = tiny()
    assert "decoder_kernel_size" not in default.to_dict()
    assert tiny(decoder_kernel_size=3).to_dict()["decoder_kernel_size"] == 3
    assert CodecConfig.from_dict(default.to_dict()) == default
    codebooks = torch.zeros(2, 8, 4)
    assert compute_codebook_id(default, codebooks, None) != compute_codebook_id(
        tiny(decoder_kernel_size=3), codebooks, None)


@pytest.mark.parametrize("kernel", [0, 2])
def test_even_or_zero_kernels_are_refused(kernel: int) -> None:
    with pytest.raises(ValueError, match="decoder_kernel_size"):
        tiny(decoder_kernel_size=kernel)
