"""Folder manifests (relative path, size, sha256 of every file; written last) and streaming hashers."""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from cdseg.storage.errors import IntegrityError, StorageError
from cdseg.utils.hashing import sha256_file

MANIFEST_NAME = "_cdseg_manifest.json"
FORMAT = "cdseg-manifest"
VERSION = 1


@dataclass(frozen=True)
class FileEntry:
    """One file of a committed folder."""

    path: str  # relative, "/"-separated
    size: int
    sha256: str


@dataclass
class Manifest:
    """The list of files of a committed folder; its presence is what marks the folder complete."""

    files: dict[str, FileEntry] = field(default_factory=dict)
    created: float = field(default_factory=time.time)

    def add(self, entry: FileEntry) -> None:
        """Record one file."""
        self.files[entry.path] = entry

    def to_bytes(self) -> bytes:
        """The JSON form, with files sorted by path."""
        payload = {
            "format": FORMAT,
            "version": VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.created)),
            "total_bytes": sum(e.size for e in self.files.values()),
            "files": [{"path": e.path, "size": e.size, "sha256": e.sha256} for _, e in sorted(self.files.items())],
        }
        return (json.dumps(payload, indent=1) + "\n").encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> Manifest:
        """Parse a manifest read from `where`; a malformed one is a `StorageError` naming it."""
        try:
            payload: dict[str, Any] = json.loads(data)
            if payload.get("format") != FORMAT:
                raise ValueError(f"format is {payload.get('format')!r}, expected {FORMAT!r}")
            manifest = cls()
            for item in payload["files"]:
                manifest.add(FileEntry(str(item["path"]), int(item["size"]), str(item["sha256"])))
        except (ValueError, KeyError, TypeError) as exc:
            raise StorageError(f"manifest {where} is malformed ({exc}); re-create the folder") from exc
        for rel in manifest.files:
            check_relative(rel, where)
        return manifest


def check_relative(rel: str, where: str) -> None:
    """Refuse absolute paths and '..' in a manifest (a manifest must never write outside its folder)."""
    parts = rel.split("/")
    if rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise StorageError(f"manifest {where} lists an unsafe path {rel!r}; re-create the folder")


def iter_files(root: Path) -> list[tuple[str, Path]]:
    """(relative "/" path, path) of every regular file below `root`, the manifest excluded, sorted."""
    out = []
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if rel != MANIFEST_NAME and path.is_file():
                out.append((rel, path))
    return sorted(out)


def manifest_of_dir(root: Path) -> Manifest:
    """Hash every file below a local folder."""
    manifest = Manifest()
    for rel, path in iter_files(root):
        manifest.add(FileEntry(rel, path.stat().st_size, sha256_file(path)))
    return manifest


def verify(expected: str | None, actual: str, size_expected: int | None, size: int, what: str) -> None:
    """Raise `IntegrityError` naming `what` when the sha256 (or size) differs from the record."""
    if size_expected is not None and size_expected != size:
        raise IntegrityError(
            f"{what} is corrupted or was changed after it was written: {size} bytes, expected {size_expected}; "
            "re-create or re-upload it"
        )
    if expected is not None and expected != actual:
        raise IntegrityError(
            f"{what} is corrupted or was changed after it was written: sha256 {actual[:16]}..., expected "
            f"{expected[:16]}...; re-create or re-upload it"
        )


class HashingReader:
    """A non-seekable reader that hashes what passes through it (upload side, one pass)."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._digest = hashlib.sha256()
        self.size = 0

    def read(self, amount: int = -1) -> bytes:
        data = self._raw.read(amount)
        self._digest.update(data)
        self.size += len(data)
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def hexdigest(self) -> str:
        return self._digest.hexdigest()
