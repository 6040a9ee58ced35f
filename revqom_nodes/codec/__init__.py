"""The ReVQom codec: bottleneck, residual VQ with EMA codebooks, frozen state with a codebook
identity, and the wire format (docs/wire-format.md). Never imports rclpy.

Names are imported lazily so that importing a light submodule (``wire``, ``config``,
``bench``) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CodecConfig": "config",
    "CodecError": "errors",
    "WireFormatError": "errors",
    "CodecStateError": "errors",
    "ReVQomCodec": "codec",
    "CodecOutput": "codec",
    "CodecLosses": "codec",
    "ResidualVQ": "rvq",
    "CodecState": "state",
    "CodecDecoder": "receiver",
    "Encoding": "wire",
    "encode_payload": "wire",
    "decode_payload": "wire",
    "check_codebook_id": "wire",
    "measure_frequency_tables": "entropy",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
