"""The local-filesystem backend: atomic writes, committed folders with a manifest."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

from cdseg.storage.errors import StorageError
from cdseg.storage.manifest import MANIFEST_NAME, iter_files, manifest_of_dir
from cdseg.utils.atomic import atomic_dir, write_bytes_atomic


def read_bytes(path: Path) -> bytes:
    """The content of a local file."""
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise StorageError(f"{path} does not exist; check the path") from exc
    except IsADirectoryError as exc:
        raise StorageError(f"{path} is a folder, expected a file") from exc
    except PermissionError as exc:
        raise StorageError(f"permission denied reading {path}; fix its permissions") from exc


def write_bytes(path: Path, data: bytes) -> None:
    """Write a local file atomically (parents created)."""
    try:
        write_bytes_atomic(path, data)
    except PermissionError as exc:
        raise StorageError(f"permission denied writing {path}; choose a writable location") from exc


def existing_file(path: Path) -> Path:
    """`path` itself, after checking that it is a file."""
    if not path.is_file():
        raise StorageError(f"{path} does not exist or is not a file; check the path")
    return path


def existing_dir(path: Path) -> Path:
    """`path` itself, after checking that it is a folder."""
    if not path.is_dir():
        raise StorageError(f"folder {path} does not exist; check the path")
    return path


@contextlib.contextmanager
def staged_dir(path: Path, replace: bool) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; on success write its manifest and rename it into place."""
    if path.exists() and not replace:
        raise StorageError(f"{path} already exists; choose another output or allow replacing it")
    try:
        with atomic_dir(path, replace=replace) as tmp:
            yield tmp
            (tmp / MANIFEST_NAME).write_bytes(manifest_of_dir(tmp).to_bytes())
    except FileExistsError as exc:
        raise StorageError(f"{path} appeared while it was being written; choose another output") from exc
    except PermissionError as exc:
        raise StorageError(f"permission denied writing {path}; choose a writable location") from exc


def list_dir(path: Path) -> list[str]:
    """Names of the entries of a local folder (the manifest hidden), sorted."""
    existing_dir(path)
    return sorted(p.name for p in path.iterdir() if p.name != MANIFEST_NAME)


def copy_dir(source: Path, target: Path, replace: bool) -> None:
    """Copy a folder into place atomically; its manifest is kept if it has one, else computed."""
    existing_dir(source)
    if target.exists() and not replace:
        raise StorageError(f"{target} already exists; choose another output or allow replacing it")
    try:
        with atomic_dir(target, replace=replace) as tmp:
            for rel, path in iter_files(source):
                dest = tmp / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, dest)
            if (source / MANIFEST_NAME).is_file():
                shutil.copyfile(source / MANIFEST_NAME, tmp / MANIFEST_NAME)
            else:
                (tmp / MANIFEST_NAME).write_bytes(manifest_of_dir(tmp).to_bytes())
    except FileExistsError as exc:
        raise StorageError(f"{target} appeared while it was being written; choose another output") from exc
    except PermissionError as exc:
        raise StorageError(f"permission denied writing {target}; choose a writable location") from exc
