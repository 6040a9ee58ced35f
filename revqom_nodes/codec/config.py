"""``CodecConfig``: the one home of every codec setting and default.

Defaults are the ReVQom-S reference on DAIR-V2X (docs: /work/shared/reference/revqom.md):
C = 256, Cr = C / 16 = 16, K = 64, n_q = 3 (18 bits per BEV cell).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

MAX_CODEBOOK_SIZE = 4096
MAX_NUM_QUANTIZERS = 8
_FLOAT_FIELDS = (
    "ema_decay",
    "commitment_weight",
    "orthogonal_weight",
    "dead_code_threshold",
    "codebook_init_std",
)


LATER_FIELDS = {"decoder_kernel_size": 1}  # field -> default: left out of to_dict at the default


@dataclass(frozen=True, kw_only=True)
class CodecConfig:
    """Settings of the bottleneck, residual VQ and post-affine decoder.

    channels: C, channels of the BEV map entering the bottleneck.
    channel_reduction_ratio: Cr = C / ratio channels are quantized (must divide C).
    codebook_size: K codewords per stage, 2..4096 (any integer, not only powers of two).
    num_quantizers: Q residual stages, 1..8.
    ema_decay: decay of the codebook EMAs (cluster size, embedding sum).
    commitment_weight: weight of mse(z, sg[z_q]).
    orthogonal_weight: weight of mean((W W^T - I)^2) on the (Cr, C) bottleneck weight.
    dead_code_threshold: a code whose EMA usage (smoothed number of vectors assigned to it per
        training batch, summed over all replicas) falls below this is re-initialised from a
        random current residual; 1.0 means "fewer than about one vector per batch"; 0 disables.
    codebook_init_std: codebooks start as randn * this.
    bottleneck_groups, decoder_groups: requested GroupNorm groups (reference: 2 and 16); the
        groups used are gcd(requested, channels) so that they always divide the channel count
        (e.g. Cr = 1 gives 1 group); see ``bottleneck_norm_groups`` / ``decoder_norm_groups``.
    decoder_kernel_size: kernel of the decoder's first conv (1 in the reference; 3 lets the
        receiver use the neighbouring cells' codes). Added after the first models: ``to_dict``
        leaves it out at its default, so that those models' codebook ids stay valid.
    """

    channels: int = 256
    channel_reduction_ratio: int = 16
    codebook_size: int = 64
    num_quantizers: int = 3
    ema_decay: float = 0.8
    commitment_weight: float = 0.05
    orthogonal_weight: float = 1e-4
    dead_code_threshold: float = 1.0
    codebook_init_std: float = 0.02
    bottleneck_groups: int = 2
    decoder_groups: int = 16
    decoder_kernel_size: int = 1

    def __post_init__(self) -> None:
        for name in (
            "channels",
            "channel_reduction_ratio",
            "codebook_size",
            "num_quantizers",
            "bottleneck_groups",
            "decoder_groups",
            "decoder_kernel_size",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"CodecConfig.{name} must be a positive int, got {value!r}")
        if self.channels % self.channel_reduction_ratio:
            raise ValueError(
                f"channel_reduction_ratio {self.channel_reduction_ratio} must divide channels {self.channels}"
            )
        if not 2 <= self.codebook_size <= MAX_CODEBOOK_SIZE:
            raise ValueError(f"codebook_size must be in 2..{MAX_CODEBOOK_SIZE}, got {self.codebook_size}")
        if not 1 <= self.num_quantizers <= MAX_NUM_QUANTIZERS:
            raise ValueError(f"num_quantizers must be in 1..{MAX_NUM_QUANTIZERS}, got {self.num_quantizers}")
        for name in _FLOAT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"CodecConfig.{name} must be a finite number, got {value!r}")
            object.__setattr__(self, name, float(value))  # 1 and 1.0 hash alike in the codebook id
            if value < 0:
                raise ValueError(f"CodecConfig.{name} must be >= 0, got {value!r}")
        if self.decoder_kernel_size % 2 == 0:
            raise ValueError(f"decoder_kernel_size must be odd, got {self.decoder_kernel_size}")
        if self.ema_decay >= 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")

    @property
    def reduced_channels(self) -> int:
        """Cr: channels of the bottleneck output and of every codeword."""
        return self.channels // self.channel_reduction_ratio

    @property
    def bits_per_index(self) -> int:
        """b = ceil(log2 K) bits per packed index (1 for K = 2)."""
        return (self.codebook_size - 1).bit_length()

    @property
    def bottleneck_norm_groups(self) -> int:
        return math.gcd(self.bottleneck_groups, self.reduced_channels)

    @property
    def decoder_norm_groups(self) -> int:
        return math.gcd(self.decoder_groups, self.channels)

    def to_dict(self) -> dict[str, Any]:
        """Plain ints and floats, in field order (JSON- and ``torch.load(weights_only=True)``-safe);
        fields added later (``LATER_FIELDS``) only where they differ from their defaults."""
        values = dataclasses.asdict(self)
        return {k: v for k, v in values.items() if k not in LATER_FIELDS or v != LATER_FIELDS[k]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CodecConfig:
        """Inverse of ``to_dict``; unknown keys are an error, missing keys take the defaults."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown CodecConfig keys {unknown}; valid keys are {sorted(known)}")
        return cls(**data)
