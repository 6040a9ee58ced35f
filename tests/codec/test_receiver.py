"""``CodecDecoder.decode_agents``: every agent's map in one call (uint8 indices), each map exactly
as decoded alone, whole maps unmasked and maps with lost cells concealed; bad indices refused."""

from __future__ import annotations

import pytest
import torch

from revqom_nodes.codec.codec import ReVQomCodec
from revqom_nodes.codec.config import CodecConfig
from revqom_nodes.codec.errors import CodecError
from revqom_nodes.codec.receiver import CodecDecoder

CONFIG = CodecConfig(channels=16, channel_reduction_ratio=4, codebook_size=5, num_quantizers=2,
                     decoder_kernel_size=3, decoder_groups=4)


@pytest.fixture
def receiver() -> CodecDecoder:
    torch.manual_seed(0)
    codec = ReVQomCodec(CONFIG).train()
    codec(torch.randn(2, 16, 6, 6))  # move the codebooks away from their initial values
    return CodecDecoder(codec.eval().export_state())


@pytest.mark.parametrize("lost", [(), (1,), (0, 2), (0, 1, 2)])
def test_all_agents_in_one_call_equal_each_map_alone(receiver: CodecDecoder, lost: tuple[int, ...]) -> None:
    generator = torch.Generator().manual_seed(1)
    indices = torch.randint(0, 5, (3, 2, 6, 8), generator=generator)
    valid = [torch.rand(6, 8, generator=generator) > 0.3 if a in lost else None for a in range(3)]
    bev, held = receiver.decode_agents(indices.to(torch.uint8), valid)
    assert bev.shape == (3, 16, 6, 8)
    for a in range(3):
        alone = receiver.decode(indices[a : a + 1], None if valid[a] is None else valid[a][None])
        assert torch.equal(bev[a], alone.bev[0])  # bit for bit
        assert (held[a] is None) == (valid[a] is None)
        if held[a] is not None:
            assert torch.equal(held[a], alone.valid[0])


def test_bad_indices_are_refused_on_the_host(receiver: CodecDecoder) -> None:
    with pytest.raises(CodecError, match=r"\[0, 5\)"):
        receiver.decode_agents(torch.full((2, 2, 3, 3), 5, dtype=torch.uint8), [None, None])
    with pytest.raises(CodecError, match="validity"):
        receiver.decode_agents(torch.zeros((2, 2, 3, 3), dtype=torch.uint8), [None])
