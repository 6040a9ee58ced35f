"""``RuntimeModel``: what a node needs from a model file, and the device it runs on.

A model file is the single source of truth of a deployment (ARCHITECTURE.md): the
detector (voxel grid, backbone, codec, fusion, head) and the frozen codec state whose
``codebook_id`` every message carries. Agents use the encoder half, the fusion node the
decoder half; both configure themselves from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from revqom_nodes.perception.sample import COMM_RANGE_M
from revqom_nodes.runtime.errors import RuntimeConfigError

if TYPE_CHECKING:
    from revqom_nodes.codec import CodecConfig, CodecState
    from revqom_nodes.codec.context import ContextTables
    from revqom_nodes.model_file import LoadedModel
    from revqom_nodes.perception.detector import CooperativeDetector
    from revqom_nodes.perception.grid import BevGrid

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cpu``; ``cuda`` or ``cuda:N`` (must exist)."""
    name = str(name).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise RuntimeConfigError(f"device {name!r} requested but CUDA is not available (use auto or cpu)")
        return torch.device(name)
    raise RuntimeConfigError(f"unknown device {name!r}; valid: {list(DEVICES)} or cuda:N")


@dataclass(frozen=True, eq=False)
class RuntimeModel:
    """A cooperative detector with a codec, in eval mode on its device, and its frozen codec state."""

    detector: CooperativeDetector
    codec_state: CodecState
    source: str = ""
    comm_range_m: float = COMM_RANGE_M  # partners farther from the ego are not fused (the training setting)

    def __post_init__(self) -> None:
        detector = self.detector
        where = self.source or "model"
        if detector.config.mode != "cooperative" or detector.codec is None:
            raise RuntimeConfigError(
                f"{where}: the runtime needs a cooperative detector with a codec "
                f"(mode {detector.config.mode!r}, codec {'set' if detector.codec is not None else 'null'})"
            )
        held = detector.codec.quantizer.codebooks.detach().cpu()
        state_codebooks = self.codec_state.codebooks
        if held.shape != state_codebooks.shape or not torch.equal(held, state_codebooks):
            raise RuntimeConfigError(f"{where}: the codec state's codebooks differ from the detector's codec")
        if detector.codec.config != self.codec_state.settings:
            raise RuntimeConfigError(f"{where}: the codec state's settings differ from the detector's codec")
        detector.eval()

    @classmethod
    def from_loaded(cls, loaded: LoadedModel, source: str = "") -> RuntimeModel:
        """A model file read by ``model_file.load_model``; it must send codebook indices."""
        if loaded.codec_state is None:
            raise RuntimeConfigError(
                f"{source or 'model'}: the model has no codec; the runtime sends codebook indices"
            )
        return cls(loaded.detector, loaded.codec_state, source, loaded.comm_range_m)

    @classmethod
    def from_detector(
        cls,
        detector: CooperativeDetector,
        entropy_tables: np.ndarray | None = None,
        source: str = "",
        context_tables: ContextTables | None = None,
    ) -> RuntimeModel:
        """Freeze the detector's own codec (optionally with (Q, K) entropy tables and context tables)."""
        if detector.codec is None:
            raise RuntimeConfigError(f"{source or 'model'}: the detector has no codec")
        return cls(detector, detector.codec.export_state(entropy_tables, context_tables), source)

    @property
    def device(self) -> torch.device:
        return self.detector.device

    @property
    def grid(self) -> BevGrid:
        return self.detector.grid

    @property
    def settings(self) -> CodecConfig:
        return self.codec_state.settings

    @property
    def codebook_id(self) -> str:
        return self.codec_state.codebook_id

    @property
    def entropy_tables(self) -> np.ndarray | None:
        return self.codec_state.entropy_tables

    @property
    def context_tables(self) -> ContextTables | None:
        return self.codec_state.context_tables


def load_runtime_model(path: str | Path, device: str | torch.device = "auto") -> RuntimeModel:
    """Read and verify a model file (``revqom_nodes.model_file``) onto ``device`` (a name or a device).

    Every problem (missing or corrupt file, no codec, unknown device) raises RuntimeConfigError.
    """
    from revqom_nodes.model_file import ModelFileError, load_model

    target = device if isinstance(device, torch.device) else resolve_device(device)
    try:
        loaded = load_model(path, target)
    except ModelFileError as exc:
        raise RuntimeConfigError(str(exc)) from exc
    return RuntimeModel.from_loaded(loaded, str(path))
