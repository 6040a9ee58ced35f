"""Bottleneck, residual VQ (EMA, dead codes, STE, losses) and the codec's encode/decode boundary."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from revqom_nodes.codec.codec import ReVQomCodec
from revqom_nodes.codec.config import CodecConfig
from revqom_nodes.codec.errors import CodecError
from revqom_nodes.codec.rvq import ResidualVQ, gather_codewords, perplexity, usage_histogram


def tiny(**overrides) -> CodecConfig:
    return CodecConfig(
        **{"channels": 16, "channel_reduction_ratio": 4, "codebook_size": 8, "num_quantizers": 2, **overrides}
    )


def buffers(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: b.clone() for name, b in module.named_buffers()}


@pytest.mark.parametrize(
    ("C", "ratio", "K", "Q"), [(16, 4, 2, 1), (16, 16, 5, 3), (24, 2, 64, 8), (8, 1, 4096, 2)]
)
def test_encode_decode_shapes_any_k_and_q(C: int, ratio: int, K: int, Q: int) -> None:
    torch.manual_seed(0)
    codec = ReVQomCodec(
        tiny(channels=C, channel_reduction_ratio=ratio, codebook_size=K, num_quantizers=Q)
    ).eval()
    bev = torch.randn(2, C, 5, 7)
    indices = codec.encode(bev)
    assert indices.shape == (2, Q, 5, 7) and indices.dtype == torch.int64
    assert 0 <= int(indices.min()) and int(indices.max()) < K
    assert codec.decode(indices).shape == (2, C, 5, 7)
    out = codec(bev)
    torch.testing.assert_close(out.indices, indices)
    assert out.bev.shape == bev.shape and out.perplexity.shape == (Q,)


def test_groupnorm_groups_divide_channels() -> None:
    config = tiny(channels=24, channel_reduction_ratio=24, decoder_groups=16)
    assert (config.bottleneck_norm_groups, config.decoder_norm_groups) == (1, 8)
    codec = ReVQomCodec(config)
    assert codec.encoder.norm.num_groups == 1 and codec.decoder.norm.num_groups == 8
    assert (CodecConfig().bottleneck_norm_groups, CodecConfig().decoder_norm_groups) == (2, 16)


@pytest.mark.parametrize(
    "bad",
    [
        {"channels": 10, "channel_reduction_ratio": 4},
        {"codebook_size": 1},
        {"codebook_size": 4097},
        {"num_quantizers": 9},
        {"ema_decay": 1.0},
        {"commitment_weight": -1.0},
        {"channels": 2.5},
        {"dead_code_threshold": float("nan")},
    ],
)
def test_config_rejects_bad_values(bad: dict) -> None:
    with pytest.raises(ValueError):
        tiny(**bad)


def test_config_dict_round_trip_and_unknown_keys() -> None:
    config = tiny(ema_decay=0.5)
    assert CodecConfig.from_dict(config.to_dict()) == config
    assert tiny(commitment_weight=1).commitment_weight == 1.0 and isinstance(
        tiny(commitment_weight=1).commitment_weight, float
    )
    with pytest.raises(ValueError, match="unknown CodecConfig keys"):
        CodecConfig.from_dict({**config.to_dict(), "decay": 0.9})
    with pytest.raises(TypeError):
        CodecConfig(16)  # keyword-only


def test_eval_mode_is_deterministic_and_never_changes_codebooks() -> None:
    torch.manual_seed(0)
    codec = ReVQomCodec(tiny())
    bev = torch.randn(2, 16, 6, 6)
    before = buffers(codec)
    codec.eval()
    first, second = codec(bev), codec(bev)
    torch.testing.assert_close(first.bev, second.bev)
    torch.testing.assert_close(first.indices, second.indices)
    codec.train()
    codec.encode(bev)  # encode is the sender's inference path, whatever the mode
    for name, value in buffers(codec).items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0)
    codec(bev)
    assert not torch.equal(buffers(codec)["quantizer.codebooks"], before["quantizer.codebooks"])


def test_straight_through_gradients_and_weighted_losses() -> None:
    torch.manual_seed(0)
    config = tiny(commitment_weight=0.5, orthogonal_weight=0.25)
    codec = ReVQomCodec(config).train()
    bev = torch.randn(2, 16, 4, 4)
    codec(bev)  # one EMA step moves the codebooks from their ~0.02 initial scale to the data's
    out = codec(bev)
    target = torch.randn_like(out.bev)  # GroupNorm output: a mean square loss would have no gradient
    ((out.bev - target).square().mean() + out.losses.total).backward()
    assert codec.encoder.conv.weight.grad is not None and codec.encoder.conv.weight.grad.abs().sum() > 0
    assert codec.decoder.conv1.weight.grad.abs().sum() > 0
    assert codec.quantizer.codebooks.grad is None
    W = codec.encoder.conv.weight.detach().flatten(1)
    expected_orth = 0.25 * (W @ W.t() - torch.eye(W.shape[0])).square().mean()
    torch.testing.assert_close(out.losses.orthogonal.detach(), expected_orth)
    with torch.no_grad():
        codec.eval()
        z = codec.encoder(bev)
        z_q = gather_codewords(codec.quantizer.codebooks, codec.encode(bev))
        expected_commit = 0.5 * (z - z_q).square().mean()
        torch.testing.assert_close(codec(bev).losses.commitment, expected_commit)


def gaussian_clusters(generator: torch.Generator, centres: torch.Tensor, n: int) -> torch.Tensor:
    """(1, D, n, 1) points from the given (M, D) centres, std 0.05."""
    labels = torch.randint(len(centres), (n,), generator=generator)
    points = centres[labels] + 0.05 * torch.randn(n, centres.shape[1], generator=generator)
    return points.t().reshape(1, centres.shape[1], n, 1)


def test_ema_training_spreads_usage_and_reduces_error() -> None:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    centres = torch.tensor(
        [
            [3.0, 0.0, 0.0, 0.0],
            [-3.0, 0.0, 0.0, 0.0],
            [0.0, 3.0, 0.0, 0.0],
            [0.0, -3.0, 0.0, 0.0],
            [0.0, 0.0, 3.0, 3.0],
        ]
    )
    rvq = ResidualVQ(tiny(channels=4, channel_reduction_ratio=1, codebook_size=8, num_quantizers=1)).train()
    errors, perplexities = [], []
    for _ in range(30):
        z = gaussian_clusters(generator, centres, 256)
        out = rvq(z)
        errors.append(float((out.quantized - z).square().mean()))
        perplexities.append(float(out.perplexity[0]))
    assert errors[-1] < 0.02 * errors[0]
    assert perplexities[-1] > 4.0 and perplexities[-1] > perplexities[0] + 1.0
    rvq.eval()
    z = gaussian_clusters(generator, centres, 500)
    codes_per_cluster = [
        set(rvq.quantize(z[:, :, (z[0, :, :, 0].t() - c).norm(dim=1) < 1]).flatten().tolist())
        for c in centres
    ]
    assert len(set().union(*codes_per_cluster)) >= len(centres)  # every cluster has its own codes
    for a in range(len(centres)):
        for b in range(a + 1, len(centres)):
            assert not codes_per_cluster[a] & codes_per_cluster[b]


def test_dead_codes_are_refreshed_from_residuals() -> None:
    torch.manual_seed(0)
    config = tiny(
        channels=4, channel_reduction_ratio=1, codebook_size=4, num_quantizers=1, dead_code_threshold=1.0
    )
    rvq = ResidualVQ(config).train()
    far = torch.full((4,), 1000.0)
    with torch.no_grad():
        rvq.codebooks[0, 3] = rvq.embed_sum[0, 3] = far  # never the nearest code (cluster size 1)
    z = torch.randn(1, 4, 8, 8)
    rvq(z)
    vectors = z[0].flatten(1).t()
    assert torch.isclose(vectors, rvq.codebooks[0, 3]).all(dim=1).any()  # restarted at one of the residuals
    assert float(rvq.cluster_size[0, 3]) == 1.0
    disabled = ResidualVQ(dataclasses.replace(config, dead_code_threshold=0.0)).train()
    with torch.no_grad():
        disabled.codebooks[0, 3] = disabled.embed_sum[0, 3] = far
    disabled(z)
    torch.testing.assert_close(
        disabled.codebooks[0, 3], far, rtol=1e-4, atol=0
    )  # no refresh: the EMA ratio stays


def test_usage_histogram_and_perplexity() -> None:
    indices = torch.tensor([[[[0, 1], [2, 3]], [[1, 1], [1, 1]]]])
    hist = usage_histogram(indices, 4)
    assert hist.tolist() == [[1, 1, 1, 1], [0, 4, 0, 0]]
    torch.testing.assert_close(perplexity(hist), torch.tensor([4.0, 1.0]))


@pytest.mark.parametrize(
    "indices",
    [
        torch.full((1, 2, 2, 2), 8),
        torch.full((1, 2, 2, 2), -1),
        torch.zeros(1, 3, 2, 2, dtype=torch.long),
        torch.zeros(1, 2, 2, 2),
    ],
)
def test_decode_rejects_bad_indices(indices: torch.Tensor) -> None:
    with pytest.raises(CodecError):
        ReVQomCodec(tiny()).decode(indices)


def test_encode_rejects_bad_bev() -> None:
    with pytest.raises(CodecError, match="bev must be"):
        ReVQomCodec(tiny()).encode(torch.zeros(1, 8, 4, 4))


def test_residual_stages_refine_the_reconstruction() -> None:
    """Later stages quantize what earlier stages left: more stages, smaller error."""
    torch.manual_seed(0)
    rvq = ResidualVQ(tiny(channels=4, channel_reduction_ratio=1, codebook_size=16, num_quantizers=3)).train()
    for _ in range(20):
        rvq(torch.randn(1, 4, 16, 16))
    rvq.eval()
    z = torch.randn(1, 4, 16, 16)
    indices = rvq.quantize(z)
    errors = [
        float((gather_codewords(rvq.codebooks[:q], indices[:, :q]) - z).square().mean()) for q in (1, 2, 3)
    ]
    assert errors[0] > errors[1] > errors[2]
