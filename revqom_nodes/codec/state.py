"""``CodecState``: the frozen, shareable side of the codec and its codebook identity.

The state holds what a receiver needs to rebuild features from indices (settings, codebooks,
decoder weights) plus the per-stage entropy tables and, optionally, the context tables
(``context.ContextTables``). Its ``codebook_id`` is the SHA-256 hex digest of::

    header = json.dumps({"format": "revqom-codebook-id", "version": 1,
                         "settings": <CodecConfig.to_dict()>,
                         "codebooks": {"shape": [Q, K, Cr], "dtype": "<f4"},
                         "entropy_tables": {"shape": [Q, K], "dtype": "<i8"} or None,
                         # only when the state has context tables:
                         "context_tables": {"alphabet": {"shape": [N, Q], "dtype": "<i8"},
                                            "counts": {"shape": [9, N + 1], "dtype": "<i8"},
                                            "escape_counts": {"shape": [Q, K], "dtype": "<i8"}}},
                        sort_keys=True, separators=(",", ":")).encode("utf-8")
    digest over: header + b"\\n" + codebooks as little-endian float32 in C order
                 + entropy tables as little-endian int64 in C order (when present)
                 + alphabet, counts, escape_counts, each little-endian int64 in C order (when present)

so it changes with any setting, any codebook bit, and the tables (which sender and receiver
must share bit-exactly for ENTROPY and CONTEXT payloads); a state without context tables has
the id it had before they existed. Decoder weights are not hashed: they do
not change what indices mean.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from revqom_nodes.codec.bottleneck import PostAffineDecoder
from revqom_nodes.codec.config import LATER_FIELDS, CodecConfig
from revqom_nodes.codec.context import ContextTables, validate_context_tables
from revqom_nodes.codec.entropy import validate_frequency_tables
from revqom_nodes.codec.errors import CodecStateError, WireFormatError

STATE_FORMAT = "revqom.codec_state"
STATE_VERSION = 1
_STATE_KEYS = ("format", "version", "settings", "codebooks", "decoder", "entropy_tables", "codebook_id")
_LATER_KEYS = ("context_tables",)  # absent from files written before they existed
_CONTEXT_PARTS = ContextTables._fields


def compute_codebook_id(
    settings: CodecConfig,
    codebooks: torch.Tensor,
    entropy_tables: np.ndarray | None,
    context_tables: ContextTables | None = None,
) -> str:
    """SHA-256 hex over the canonical encoding described in the module docstring."""
    cb = codebooks.detach().cpu().numpy().astype("<f4", copy=False)
    header = {
        "format": "revqom-codebook-id",
        "version": 1,
        "settings": settings.to_dict(),
        "codebooks": {"shape": list(cb.shape), "dtype": "<f4"},
        "entropy_tables": None
        if entropy_tables is None
        else {"shape": list(entropy_tables.shape), "dtype": "<i8"},
    }
    if context_tables is not None:
        header["context_tables"] = {
            name: {"shape": list(part.shape), "dtype": "<i8"}
            for name, part in zip(_CONTEXT_PARTS, context_tables, strict=True)
        }
    digest = hashlib.sha256(json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8"))
    digest.update(b"\n")
    digest.update(np.ascontiguousarray(cb).tobytes())
    if entropy_tables is not None:
        digest.update(np.ascontiguousarray(entropy_tables.astype("<i8", copy=False)).tobytes())
    for part in context_tables or ():
        digest.update(np.ascontiguousarray(part.astype("<i8", copy=False)).tobytes())
    return digest.hexdigest()


def _check_tables(tables: Any, settings: CodecConfig) -> np.ndarray | None:
    if tables is None:
        return None
    if isinstance(tables, torch.Tensor):
        tables = tables.detach().cpu().numpy()
    try:
        checked = validate_frequency_tables(tables, settings.num_quantizers, settings.codebook_size)
    except WireFormatError as exc:
        raise CodecStateError(f"entropy tables: {exc}") from exc
    checked.setflags(write=False)
    return checked


def _check_context_tables(tables: Any, settings: CodecConfig) -> ContextTables | None:
    if tables is None:
        return None
    try:
        checked = validate_context_tables(tables, settings.num_quantizers, settings.codebook_size)
    except WireFormatError as exc:
        raise CodecStateError(f"context tables: {exc}") from exc
    for part in checked:
        part.setflags(write=False)
    return checked


@dataclass(frozen=True, eq=False)
class CodecState:
    """settings; codebooks (Q, K, Cr) float32 CPU; decoder_state (PostAffineDecoder state dict);
    entropy_tables (Q, K) int64 >= 1 or None; codebook_id (64 hex chars); context_tables
    (``ContextTables`` of int64 arrays) or None. Validated on creation."""

    settings: CodecConfig
    codebooks: torch.Tensor
    decoder_state: dict[str, torch.Tensor]
    entropy_tables: np.ndarray | None
    codebook_id: str
    context_tables: ContextTables | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.settings, CodecConfig):
            raise CodecStateError(f"settings must be a CodecConfig, got {type(self.settings).__name__}")
        s = self.settings
        expected = (s.num_quantizers, s.codebook_size, s.reduced_channels)
        cb = self.codebooks
        if not isinstance(cb, torch.Tensor) or cb.dtype != torch.float32 or tuple(cb.shape) != expected:
            raise CodecStateError(
                f"codebooks must be a float32 tensor of shape (Q, K, Cr) = {expected}, "
                f"got {getattr(cb, 'dtype', type(cb).__name__)} {tuple(getattr(cb, 'shape', ()))}"
            )
        if not bool(torch.isfinite(cb).all()):
            raise CodecStateError("codebooks contain NaN or infinite values")
        self._check_decoder_state()
        if self.entropy_tables is not None and not isinstance(self.entropy_tables, np.ndarray):
            raise CodecStateError("entropy_tables must be a numpy array or None")
        _check_tables(self.entropy_tables, s)
        if self.context_tables is not None and not isinstance(self.context_tables, ContextTables):
            raise CodecStateError("context_tables must be ContextTables or None")
        _check_context_tables(self.context_tables, s)
        recomputed = compute_codebook_id(s, cb, self.entropy_tables, self.context_tables)
        if self.codebook_id != recomputed:
            raise CodecStateError(
                f"codebook_id mismatch: stored {str(self.codebook_id)[:16]}..., recomputed "
                f"{recomputed[:16]}... from the settings, codebooks and tables; "
                "the codec state is corrupted or was edited"
            )

    def _check_decoder_state(self) -> None:
        with torch.device("meta"):
            reference = PostAffineDecoder(self.settings).state_dict()
        state = self.decoder_state
        if not isinstance(state, dict) or set(state) != set(reference):
            got = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise CodecStateError(f"decoder state keys {got} do not match the decoder's {sorted(reference)}")
        for name, ref in reference.items():
            value = state[name]
            if (
                not isinstance(value, torch.Tensor)
                or value.shape != ref.shape
                or not value.is_floating_point()
            ):
                raise CodecStateError(
                    f"decoder state {name!r} must be a float tensor of shape {tuple(ref.shape)}"
                )
            if not bool(torch.isfinite(value).all()):
                raise CodecStateError(f"decoder state {name!r} contains NaN or infinite values")

    @classmethod
    def build(
        cls,
        *,
        settings: CodecConfig,
        codebooks: torch.Tensor,
        decoder_state: dict[str, torch.Tensor],
        entropy_tables: np.ndarray | torch.Tensor | None = None,
        context_tables: ContextTables | None = None,
    ) -> CodecState:
        """Copy the inputs to CPU float32 / int64 and compute the codebook id."""
        codebooks = codebooks.detach().to("cpu", torch.float32).contiguous().clone()
        decoder = {
            k: v.detach().to("cpu", torch.float32).contiguous().clone() for k, v in decoder_state.items()
        }
        tables = _check_tables(entropy_tables, settings)
        context = _check_context_tables(context_tables, settings)
        codebook_id = compute_codebook_id(settings, codebooks, tables, context)
        return cls(settings, codebooks, decoder, tables, codebook_id, context)

    def with_context_tables(self, context_tables: ContextTables | None) -> CodecState:
        """This state with ``context_tables`` added, replaced or (None) removed: another codebook id."""
        return CodecState.build(
            settings=self.settings,
            codebooks=self.codebooks,
            decoder_state=self.decoder_state,
            entropy_tables=self.entropy_tables,
            context_tables=context_tables,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain tensors, ints, strings and dicts, for ``torch.save`` / ``torch.load(weights_only=True)``;
        ``context_tables`` only when the state has them (so that older builds read the others)."""
        data = {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "settings": self.settings.to_dict(),
            "codebooks": self.codebooks.clone(),
            "decoder": {k: v.clone() for k, v in self.decoder_state.items()},
            "entropy_tables": None
            if self.entropy_tables is None
            else torch.from_numpy(self.entropy_tables.copy()),
            "codebook_id": self.codebook_id,
        }
        if self.context_tables is not None:
            data["context_tables"] = {
                name: torch.from_numpy(part.copy())
                for name, part in zip(_CONTEXT_PARTS, self.context_tables, strict=True)
            }
        return data

    @classmethod
    def from_dict(cls, data: Any) -> CodecState:
        """Inverse of ``to_dict``; raises CodecStateError for missing keys, corruption or an id mismatch."""
        if not isinstance(data, dict):
            raise CodecStateError(f"codec state must be a dict, got {type(data).__name__}")
        missing = [k for k in _STATE_KEYS if k not in data]
        unknown = sorted(set(data) - set(_STATE_KEYS) - set(_LATER_KEYS))
        if missing or unknown:
            raise CodecStateError(f"codec state keys: missing {missing}, unknown {unknown}")
        if (data["format"], data["version"]) != (STATE_FORMAT, STATE_VERSION):
            raise CodecStateError(
                f"unsupported codec state {data['format']!r} version {data['version']!r}; "
                f"this build reads {STATE_FORMAT!r} version {STATE_VERSION}"
            )
        settings = data["settings"]
        fields = {f.name for f in dataclasses.fields(CodecConfig)}
        required = fields - set(LATER_FIELDS)  # fields added later may be absent (their defaults)
        if not isinstance(settings, dict) or not required <= set(settings) <= fields:
            raise CodecStateError(
                f"codec settings must have the keys {sorted(required)}, optionally {sorted(LATER_FIELDS)}"
            )
        try:
            config = CodecConfig.from_dict(settings)
        except (TypeError, ValueError) as exc:
            raise CodecStateError(f"invalid codec settings: {exc}") from exc
        decoder = data["decoder"]
        if not isinstance(decoder, dict):
            raise CodecStateError("codec state 'decoder' must be a dict of tensors")
        tables = data["entropy_tables"]
        if tables is not None and not isinstance(tables, torch.Tensor):
            raise CodecStateError("codec state 'entropy_tables' must be a tensor or None")
        if not isinstance(data["codebook_id"], str):
            raise CodecStateError("codec state 'codebook_id' must be a string")
        context = data.get("context_tables")
        if context is not None:
            if not isinstance(context, dict) or set(context) != set(_CONTEXT_PARTS) or not all(
                isinstance(v, torch.Tensor) for v in context.values()
            ):
                raise CodecStateError(
                    f"codec state 'context_tables' must be a dict of tensors {list(_CONTEXT_PARTS)}"
                )
            context = ContextTables(*(context[name].numpy() for name in _CONTEXT_PARTS))
        return cls(
            config,
            data["codebooks"],
            dict(decoder),
            _check_tables(tables, config),
            data["codebook_id"],
            _check_context_tables(context, config),
        )

    @classmethod
    def load(cls, path: str | Path, key: str = "codec") -> CodecState:
        """Read the codec state from a model file (one ``torch.save``'d dict, entry ``key``).

        Loads with ``weights_only=True``; any unreadable, truncated or mismatched file raises
        CodecStateError naming the file.
        """
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch reports corruption with several exception types
            raise CodecStateError(
                f"{path}: cannot read the model file ({type(exc).__name__}: {exc})"
            ) from exc
        if not isinstance(data, dict) or key not in data:
            raise CodecStateError(f"{path}: not a model file with a {key!r} entry")
        try:
            return cls.from_dict(data[key])
        except CodecStateError as exc:
            raise CodecStateError(f"{path}: {exc}") from exc
