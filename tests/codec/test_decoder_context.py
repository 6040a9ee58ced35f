"""A 3x3 first decoder conv: same shapes and wire, the receiver rebuilds what training decoded;
the default (1x1) keeps the first models' settings and codebook ids."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from revqom_nodes.codec import CodecConfig, CodecDecoder, CodecState, ReVQomCodec
from revqom_nodes.codec.conceal import conceal
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
    torch.testing.assert_close(receiver.decode(indices).bev, decoded)


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


def test_partial_maps_normalise_over_the_cells_that_arrived() -> None:
    """With ``valid``, lost cells next to received ones are concealed first; the decoded cells are
    GroupNorm over the received and concealed cells only, and do not depend on the indices of
    the missing ones (the whole-map statistics did)."""
    torch.manual_seed(2)
    codec = ReVQomCodec(tiny()).eval()
    indices = torch.randint(0, 8, (1, 2, 6, 7))
    valid = torch.ones(1, 6, 7, dtype=torch.bool)
    valid[0, 1:5] = False  # four rows lost: rows 1 and 4 are concealed, rows 2 and 3 stay missing
    torch.testing.assert_close(codec.decode(indices, torch.ones_like(valid)), codec.decode(indices),
                               atol=1e-4, rtol=1e-4)
    decoded = codec.decode(indices, valid)
    decoder = codec.decoder
    quantized = codec.quantizer.codebooks  # (Q, K, Cr)
    codewords = sum(quantized[q][indices[0, q]] for q in range(2)).permute(2, 0, 1)[None]  # (1, Cr, H, W)
    filled, kept_cells = conceal(codewords, valid)
    assert kept_cells[0].sum(dim=1).tolist() == [7, 7, 0, 0, 7, 7]
    received = CodecDecoder(codec.export_state()).decode(indices, valid)  # and which cells it holds
    torch.testing.assert_close(received.bev, decoded)
    assert torch.equal(received.valid, kept_cells)
    features = torch.relu(decoder.conv2(torch.relu(decoder.conv1(filled))))
    kept = features[..., kept_cells[0]].unsqueeze(-1)  # (1, C, N, 1): received and concealed cells
    expected = torch.nn.functional.group_norm(kept, decoder.norm.num_groups, decoder.norm.weight,
                                              decoder.norm.bias, decoder.norm.eps)
    torch.testing.assert_close(decoded[..., kept_cells[0]].unsqueeze(-1), expected, atol=1e-4, rtol=1e-4)
    scrambled = indices.clone()
    scrambled[0, :, 1:5] = (scrambled[0, :, 1:5] + 3) % 8
    torch.testing.assert_close(codec.decode(scrambled, valid)[..., kept_cells[0]],
                               decoded[..., kept_cells[0]])
