"""The local-filesystem backend: atomic writes, committed folders with a manifest."""

from __future__ import annotations

import contextlib
import os
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
        raise unreadable(path, exc) from exc


def write_bytes(path: Path, data: bytes) -> None:
    """Write a local file atomically (parents created)."""
    try:
        write_bytes_atomic(path, data)
    except PermissionError as exc:
        raise StorageError(f"permission denied writing {path}; choose a writable location") from exc


class UnreadableError(StorageError):
    """A local file or folder exists but this user may not read it."""


def unreadable(path: Path, exc: OSError) -> UnreadableError:
    """One line for a permission error on `path`, with the fix."""
    where = exc.filename or path
    return UnreadableError(f"this user (uid {os.getuid()}) may not read {where} ({exc.strerror or 'permission denied'}); "
                           "give it read access (or copy the data somewhere readable)")


def existing_file(path: Path) -> Path:
    """`path` itself, after checking that it is a file this user can read."""
    try:
        if not path.is_file():
            raise StorageError(f"{path} does not exist or is not a file; check the path")
        with open(path, "rb"):
            pass
    except PermissionError as exc:
        raise unreadable(path, exc) from exc
    return path


def existing_dir(path: Path) -> Path:
    """`path` itself, after checking that it is a folder this user can list."""
    try:
        if not path.is_dir():
            raise StorageError(f"folder {path} does not exist; check the path")
        os.listdir(path)
    except PermissionError as exc:
        raise unreadable(path, exc) from exc
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


def check_output(path: Path, what: str = "output", *, inside: bool = False) -> None:
    """Refuse at once an output that cannot be written: a file, under a file, or where this user may not write.

    `inside`: the command writes into the folder `path` (else it replaces `path` from its parent).
    """
    if path.is_file() or (path.exists() and not path.is_dir()):
        raise StorageError(f"--{what} {path} is a file; pass a folder path (or remove the file)")
    start = path if inside else path.parent
    for folder in (start, *start.parents):
        if not folder.exists() and not folder.is_symlink():
            continue
        if not folder.is_dir():
            raise StorageError(f"--{what} {path} lies under {folder}, which is a file; choose another --{what}")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise StorageError(f"--{what} {path}: this user (uid {os.getuid()}) may not write in {folder} (permission "
                               f"denied); choose a writable --{what} or fix the folder's permissions")
        return
