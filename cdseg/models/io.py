"""Model checkpoints: `model.safetensors` (weights) + `model.json` (the card), never pickled.

The card holds what is needed to rebuild and to judge the model: task, step, class names per step, bands,
model config, method, epoch, metric (given by the caller), plus what this module fills in from the model
itself: `format_version`, `model` (the ModelConfig), `heads`, `bands`, `normalisation` (per-band mean/std the
model applies to [0,1] input) and `sha256` of the weights file, verified on every load.
The folder is written atomically (`cdseg.storage.staged_dir`, any URI), so it is complete or absent.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from cdseg import storage
from cdseg.errors import CheckpointError, ConfigError
from cdseg.models.config import ModelConfig
from cdseg.models.segmenter import IncrementalSegmenter, assemble
from cdseg.utils.atomic import file_mode
from cdseg.utils.hashing import sha256_file

_log = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "model.json"
FORMAT_VERSION = 1
#: card keys filled from the model itself (a caller's value for them is replaced)
MODEL_KEYS = ("format_version", "model", "heads", "bands", "normalisation", "weights_file", "sha256")


def save_model(model: IncrementalSegmenter, uri: str | Path, card: Mapping[str, Any], replace: bool = True,
               extra: Mapping[str, Mapping[str, torch.Tensor]] | None = None) -> str:
    """Write `model` and its card to the folder `uri` (local or s3://) atomically; returns `uri` as a string.

    `extra`: further tensor files `<name>.safetensors` beside the weights (e.g. the loss terms' state a next
    step needs: parameter importance), listed in the card with their sha256 and verified by `load_extra`."""
    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    full = dict(card)
    full.update(
        format_version=FORMAT_VERSION,
        model=model.cfg.model_dump(mode="json"),
        heads=list(model.head_sizes),
        bands=list(model.bands),
        normalisation={
            "bands": list(model.bands),
            "mean": [float(v) for v in model.input_mean.tolist()],
            "std": [float(v) for v in model.input_std.tolist()],
        },
        weights_file=WEIGHTS_NAME,
    )
    try:
        json.dumps(full)
    except TypeError as exc:
        raise ConfigError(f"model card is not JSON-serialisable ({exc}); pass plain numbers, strings, lists, dicts") from exc
    with _staged(uri, replace) as tmp:
        weights = tmp / WEIGHTS_NAME
        save_file(state, str(weights), metadata={"format": "pt", "cdseg_format_version": str(FORMAT_VERSION)})
        weights.chmod(file_mode())  # safetensors creates 0600 whatever the umask; a shared volume needs 0644 etc.
        full["sha256"] = sha256_file(weights)
        files = {}
        for name, tensors in (extra or {}).items():
            if not tensors:
                continue
            path = tmp / f"{name}.safetensors"
            save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(path))
            path.chmod(file_mode())
            files[name] = {"file": path.name, "sha256": sha256_file(path)}
        if files:
            full["extra_files"] = files
        (tmp / CARD_NAME).write_text(json.dumps(full, indent=2, sort_keys=False) + "\n")
    _log.info("saved model (%d outputs, sha256 %s) to %s", model.num_outputs, full["sha256"][:12], uri)
    return str(uri)


def read_card(uri: str | Path) -> dict[str, Any]:
    """The card (`model.json`) of the checkpoint folder `uri`."""
    path = _local(uri, CARD_NAME)
    try:
        card = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{_name(uri, CARD_NAME)} is not a readable JSON model card ({exc}); the checkpoint is damaged") from exc
    if not isinstance(card, dict) or "sha256" not in card or "model" not in card:
        raise CheckpointError(f"{_name(uri, CARD_NAME)} is not a cdseg model card (no sha256 / model); pass a folder written by cdseg")
    version = card.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(f"{_name(uri, CARD_NAME)} has format_version {version!r}, expected an integer; the card "
                              "was edited or damaged: write the checkpoint again with cdseg")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{_name(uri, CARD_NAME)} has format_version {card['format_version']}, newer than this cdseg reads "
            f"({FORMAT_VERSION}); upgrade cdseg"
        )
    return card


def load_state(uri: str | Path, device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The verified state dict and card of checkpoint `uri` (e.g. for `load_previous_into`)."""
    from safetensors.torch import load_file

    card = read_card(uri)
    weights = _local(uri, card.get("weights_file", WEIGHTS_NAME))
    digest = sha256_file(weights)
    if digest != card["sha256"]:
        raise CheckpointError(
            f"{_name(uri, card.get('weights_file', WEIGHTS_NAME))} has sha256 {digest[:16]}..., but its card records "
            f"{str(card['sha256'])[:16]}...: the weights file is corrupted or was replaced; restore the checkpoint"
        )
    try:
        state = load_file(str(weights), device=str(device))
    except Exception as exc:
        raise CheckpointError(f"{_name(uri, WEIGHTS_NAME)} is not a readable safetensors file ({exc})") from exc
    return state, card


def load_extra(uri: str | Path, name: str, card: Mapping[str, Any] | None = None) -> dict[str, torch.Tensor] | None:
    """The verified tensors of the extra file `name` of checkpoint `uri` (see `save_model`), or None if it has none."""
    from safetensors.torch import load_file

    card = card if card is not None else read_card(uri)
    entry = (card.get("extra_files") or {}).get(name)
    if entry is None:
        return None
    path = _local(uri, entry["file"])
    digest = sha256_file(path)
    if digest != entry["sha256"]:
        raise CheckpointError(f"{_name(uri, entry['file'])} has sha256 {digest[:16]}..., but its card records "
                              f"{str(entry['sha256'])[:16]}...: the file is corrupted or was replaced; restore the checkpoint")
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:
        raise CheckpointError(f"{_name(uri, entry['file'])} is not a readable safetensors file ({exc})") from exc


def load_model(uri: str | Path, device: str | torch.device = "cpu") -> tuple[IncrementalSegmenter, dict[str, Any]]:
    """Rebuild the model described by the card at `uri`, load its verified weights; returns (model, card)."""
    state, card = load_state(uri, device="cpu")
    try:
        cfg = ModelConfig.model_validate(card["model"])
    except Exception as exc:
        raise CheckpointError(f"{_name(uri, CARD_NAME)} has a model config this cdseg cannot read ({exc})") from exc
    model = assemble(cfg, card["heads"], card["bands"])
    missing, unexpected = model.state_dict().keys() - state.keys(), state.keys() - model.state_dict().keys()
    if missing or unexpected:
        raise CheckpointError(
            f"{_name(uri, WEIGHTS_NAME)} does not match the model its card describes (missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}); the checkpoint is inconsistent"
        )
    model.load_state_dict(state)
    return model.to(device), card


@contextmanager
def _staged(uri: str | Path, replace: bool) -> Iterator[Path]:
    with storage.staged_dir(uri, replace=replace) as tmp:
        yield Path(tmp)


def _local(uri: str | Path, name: str) -> Path:
    """A local path to the file `name` of checkpoint folder `uri`."""
    if storage.is_remote(str(uri)):
        # a remote checkpoint must be a committed folder (its storage manifest verifies every file), as a
        # prepared dataset must: objects uploaded by hand, or a half-uploaded folder, are refused
        try:
            path = Path(storage.local_dir(uri)) / name
        except storage.StorageError as exc:
            raise CheckpointError(f"{uri} cannot be read as a checkpoint folder ({exc}); pass the folder of a saved "
                                  "cdseg model") from exc
        if not path.is_file():
            raise CheckpointError(f"{_name(uri, name)} does not exist; pass the folder of a saved cdseg model")
        return path
    try:
        return Path(storage.local_file(storage.join(uri, name)))
    except storage.StorageUnavailableError:
        raise  # an outage, not a bad checkpoint: retryable
    except storage.StorageError as exc:
        if isinstance(exc.__cause__, PermissionError):  # not a bad checkpoint: its permissions
            raise CheckpointError(str(exc)) from exc
        raise CheckpointError(f"{_name(uri, name)} cannot be read ({exc}); pass the folder of a saved cdseg model") from exc


def _name(uri: str | Path, name: str) -> str:
    return f"{str(uri).rstrip('/')}/{name}"
