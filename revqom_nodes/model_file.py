"""The model file: one ``torch.save``'d dict, the single source of truth of a deployment.

Keys (read back with ``torch.load(weights_only=True)``):

| key | content |
|---|---|
| ``format`` | ``"revqom-model"`` |
| ``format_version`` | 1 |
| ``config`` | the resolved config, plain: ``model`` (``DetectorConfig.to_dict()``), ``train``, ``data`` |
| ``state_dict`` | the detector's weights and buffers (codebooks included), CPU tensors |
| ``codec`` | ``CodecState.to_dict()`` (codebooks, decoder, settings, entropy tables, id) or None |
| ``codebook_id`` | the codec state's id (64 hex chars), or ``""`` without a codec |
| ``model_id`` | SHA-256 hex over the canonical config JSON and every state-dict tensor (``model_identity``) |
| ``provenance`` | command, config path, seeds, git commit, metrics, training time, dataset |

``load_model`` rebuilds the detector and checks everything: format, config, exact state-dict
keys and shapes, the codec state (its codebook id is recomputed), that the codebooks in the
weights are the codec state's, and the model id. Every failure raises ``ModelFileError``
naming the file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import torch

from revqom_nodes.perception.config import DetectorConfig
from revqom_nodes.perception.detector import CooperativeDetector, build_detector
from revqom_nodes.perception.sample import COMM_RANGE_M

FORMAT = "revqom-model"
FORMAT_VERSION = 1
KEYS = ("format", "format_version", "config", "state_dict", "codec", "codebook_id", "model_id", "provenance")
CODEBOOKS_KEY = "codec.quantizer.codebooks"


class ModelFileError(Exception):
    """A missing, unreadable, corrupt or inconsistent model file."""


class LoadedModel(NamedTuple):
    """What ``load_model`` returns; ``detector`` is in eval mode on the requested device."""

    detector: CooperativeDetector
    config: DetectorConfig
    codec_state: Any  # CodecState or None
    codebook_id: str
    provenance: dict[str, Any]
    model_id: str
    resolved_config: dict[str, Any]  # the whole stored config (model, train, data)

    @property
    def comm_range_m(self) -> float:
        """The range the model was trained with: partners farther from the ego are not fused, m."""
        train = self.resolved_config.get("train") or {}
        return float(train.get("comm_range_m", COMM_RANGE_M))


def model_identity(config: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 hex over ``json.dumps(config, sort_keys=True)`` and, per state-dict key in sorted
    order, the key, dtype, shape and the tensor's bytes (CPU, contiguous)."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode("utf-8"))
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().to("cpu").contiguous()
        digest.update(f"\n{key}:{tensor.dtype}:{list(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def save_model(
    path: str | Path,
    detector: CooperativeDetector,
    config: dict[str, Any],
    *,
    codec_state: Any = None,
    provenance: dict[str, Any] | None = None,
) -> str:
    """Write the model file (atomically: temp file then rename); returns its model id.

    ``config``: the resolved config mapping whose ``model`` entry built ``detector``.
    ``codec_state``: the detector's exported ``CodecState`` (with entropy tables), or None.
    """
    if "model" not in config:
        raise ModelFileError("config must be the resolved mapping with a 'model' entry")
    if (codec_state is None) != (detector.codec is None):
        raise ModelFileError("a codec state is required exactly when the detector has a codec")
    state_dict = {k: v.detach().to("cpu").clone() for k, v in detector.state_dict().items()}
    model_id = model_identity(config, state_dict)
    data = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": config,
        "state_dict": state_dict,
        "codec": None if codec_state is None else codec_state.to_dict(),
        "codebook_id": "" if codec_state is None else codec_state.codebook_id,
        "model_id": model_id,
        "provenance": provenance or {},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    torch.save(data, partial)
    partial.replace(path)
    return model_id


def read_model_file(path: str | Path) -> dict[str, Any]:
    """The raw dict of a model file, with its format and keys checked (no tensors validated)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch reports truncation and corruption with several types
        raise ModelFileError(f"{path}: cannot read the model file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a revqom model file (format must be {FORMAT!r})")
    if data.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: model file version {data.get('format_version')!r}; this build reads {FORMAT_VERSION}"
        )
    missing = [k for k in KEYS if k not in data]
    unknown = sorted(set(data) - set(KEYS))
    if missing or unknown:
        raise ModelFileError(f"{path}: model file keys: missing {missing}, unknown {unknown}")
    return data


def _codec_state(path: Path, data: dict[str, Any], detector: CooperativeDetector) -> Any:
    from revqom_nodes.codec import CodecState, CodecStateError

    if detector.codec is None:
        if data["codec"] is not None or data["codebook_id"] != "":
            raise ModelFileError(f"{path}: the config has no codec but the file holds a codec state")
        return None
    if data["codec"] is None:
        raise ModelFileError(f"{path}: the config has a codec but the file holds no codec state")
    try:
        state = CodecState.from_dict(data["codec"])
    except CodecStateError as exc:
        raise ModelFileError(f"{path}: codec state: {exc}") from exc
    if state.codebook_id != data["codebook_id"]:
        raise ModelFileError(f"{path}: codebook_id differs from the codec state's")
    if state.settings != detector.config.codec:
        raise ModelFileError(f"{path}: codec state settings differ from the config's codec")
    if not torch.equal(state.codebooks, data["state_dict"][CODEBOOKS_KEY].float()):
        raise ModelFileError(f"{path}: codebooks in the weights differ from the codec state's")
    return state


def load_model(
    path: str | Path, device: torch.device | str = "cpu", *, mode: str | None = None
) -> LoadedModel:
    """Read and verify a model file; rebuild its detector on ``device`` in eval mode.

    ``mode``: run the weights in another detector mode with the same modules, i.e. "late"
    for a model trained in "ego_only" mode (late fusion needs no extra training).
    """
    path = Path(path)
    data = read_model_file(path)
    config_values = data["config"]
    if not isinstance(config_values, dict) or not isinstance(config_values.get("model"), dict):
        raise ModelFileError(f"{path}: 'config' must be a mapping with a 'model' entry")
    try:
        config = DetectorConfig.from_dict(config_values["model"])
    except (ValueError, TypeError) as exc:
        raise ModelFileError(f"{path}: invalid model config: {exc}") from exc
    state_dict = data["state_dict"]
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise ModelFileError(f"{path}: 'state_dict' must map names to tensors")
    recomputed = model_identity(config_values, state_dict)
    if data["model_id"] != recomputed:
        raise ModelFileError(
            f"{path}: model_id mismatch (stored {str(data['model_id'])[:16]}..., recomputed "
            f"{recomputed[:16]}...): the file is corrupted or was edited"
        )
    detector = build_detector(config, "cpu")
    try:
        detector.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(f"{path}: weights do not fit the config: {exc}") from exc
    codec_state = _codec_state(path, data, detector)
    if mode is not None and mode != config.mode:
        if {mode, config.mode} != {"ego_only", "late"}:
            raise ModelFileError(f"{path}: a {config.mode!r} model cannot run in mode {mode!r}")
        config = replace(config, mode=mode)
    if config is not detector.config or torch.device(device).type != "cpu":
        detector = build_detector(config, device)  # the sparse conv algorithm depends on the device
        detector.load_state_dict(state_dict, strict=True)
    detector.eval()
    provenance = data["provenance"] if isinstance(data["provenance"], dict) else {}
    return LoadedModel(
        detector, config, codec_state, data["codebook_id"], provenance, data["model_id"], config_values
    )
