"""Glue between KFP artifacts and cdseg URIs, called from component bodies (imports no kfp).

An artifact's content normally lives at `artifact.path` (KFP uploads/downloads it). Content that must
be reachable from pods KFP does not manage (a PyTorchJob's) is kept on shared storage instead, an
`s3://` prefix or a PVC path; the artifact then records that location as `metadata["uri"]` and holds a
small `location.json` pointer, so the KFP UI still shows where it is.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

LOCATION_KEY = "uri"
POINTER_FILE = "location.json"


def location(artifact: Any) -> str:
    """Where an input artifact's content lives: its shared-storage URI if it has one, else its local path."""
    uri = (getattr(artifact, "metadata", None) or {}).get(LOCATION_KEY)
    if uri:
        return str(uri)
    pointer = Path(artifact.path) / POINTER_FILE
    if pointer.is_file():
        return str(json.loads(pointer.read_text())[LOCATION_KEY])
    return str(artifact.path)


def point_to(artifact: Any, uri: str) -> None:
    """Make an output artifact refer to content kept at `uri` (shared storage)."""
    path = Path(artifact.path)
    path.mkdir(parents=True, exist_ok=True)
    (path / POINTER_FILE).write_text(json.dumps({LOCATION_KEY: uri}) + "\n")
    artifact.metadata[LOCATION_KEY] = uri


def copy_into(uri: str, artifact_path: str) -> None:
    """Copy a committed folder (local path or URI) into an output artifact's local folder."""
    from cdseg import storage

    src = storage.local_dir(uri)
    shutil.copytree(src, artifact_path, dirs_exist_ok=True)


def is_shared(uri: str) -> bool:
    """True for locations every pod of a cluster can reach: object storage, or a path on a mounted volume."""
    from cdseg import storage

    return storage.is_remote(uri)


def model_metadata(card: dict[str, Any], method: str) -> dict[str, Any]:
    """What the KFP UI shows for a checkpoint: task, step, classes, method, checksum, epoch, metric."""
    classes = card.get("classes") or card.get("class_names") or []
    meta: dict[str, Any] = {
        "task": card.get("task"),
        "step": card.get("step"),
        "classes": classes,
        "method": card.get("method") or method,
        "checksum": card.get("sha256") or card.get("checksum"),
    }
    for key in ("epoch", "metric", "encoder"):
        if card.get(key) is not None:
            meta[key] = card[key]
    return {k: v for k, v in meta.items() if v is not None}


def read_card(model_dir: str) -> dict[str, Any]:
    """The checkpoint's JSON sidecar (model.json) from a local folder; {} when absent."""
    path = Path(model_dir) / "model.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def flatten_options(options: dict[str, Any] | None) -> dict[str, Any]:
    """Dotted overrides (`{"trainer.epochs": 2}` or nested `{"trainer": {"epochs": 2}}`) as a flat dict.

    Values arrive through KFP's protobuf Struct, which turns every number into a float: integral floats are
    turned back into ints (pydantic rejects 2.0 for an int field in strict places, and it reads better).
    """
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), sub)
        else:
            flat[prefix] = _unfloat(value)

    walk("", options or {})
    return flat


def _unfloat(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_unfloat(v) for v in value]
    return value


def typed_options(model: Any, flat: dict[str, Any]) -> dict[str, Any]:
    """Coerce option values to the config field's type where KFP changed it (numbers arrive as floats or text).

    Unknown keys are passed through: the config's own validation names them and their fix.
    """
    from cdseg.config.fields import iter_leaf_fields

    leaves = {leaf.path: leaf for leaf in iter_leaf_fields(model)}
    out: dict[str, Any] = {}
    for key, value in flat.items():
        leaf = leaves.get(key)
        if leaf is None:
            out[key] = value
            continue
        if isinstance(value, str) and (leaf.is_bool or leaf.is_list or leaf.base_type in (int, float)):
            value = leaf.parse_text(value, source=f"options[{key!r}]")
        if leaf.base_type is int and isinstance(value, (float, str)):
            try:
                as_float = float(value)
            except ValueError:
                pass  # validation reports it
            else:
                value = int(as_float) if as_float.is_integer() else value
        out[key] = value
    return out


def setup_logging() -> None:
    """Text logs to stderr (KFP shows them), unless the process already configured logging (tests, torchrun)."""
    import logging

    if not logging.getLogger().handlers:
        from cdseg.utils.logging import init_logging

        init_logging("text", "INFO")
