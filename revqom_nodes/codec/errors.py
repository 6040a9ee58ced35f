"""The codec's exception types: one base, one per boundary (wire bytes, frozen state)."""

from __future__ import annotations


class CodecError(ValueError):
    """Base class of every error the codec raises for bad input."""


class WireFormatError(CodecError):
    """A payload, its message fields or a codebook id violate the wire format (docs/wire-format.md)."""


class CodecStateError(CodecError):
    """A frozen codec state (model file entry) is missing keys, corrupted or inconsistent."""
