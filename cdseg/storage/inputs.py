"""Local views of inputs and staged outputs for commands that read files with local libraries (GDAL).

`local_input` resolves a URI to a local path (a verified cached copy of a committed s3:// folder, or a
linked view of a plain prefix uploaded by hand); `staged_output` yields a local folder that becomes the
output only when the block completes.
"""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import cdseg.storage as storage
from cdseg.errors import DataError
from cdseg.storage.local import unreadable
from cdseg.storage.uri import is_remote, join, local_path
from cdseg.utils.atomic import atomic_dir


def local_input(uri: str, *, folder: bool | None = None) -> Path:
    """A local path to read `uri` from (a cached copy for s3://); `folder` says which kind is expected."""
    if is_remote(uri):
        if folder is False or str(uri).lower().endswith(".zip"):
            return Path(storage.local_file(uri))
        try:
            return Path(storage.local_dir(uri))
        except storage.StorageUnavailableError:
            raise
        except storage.StorageError:
            if folder:  # a prepared dataset must be a committed folder
                raise
            return _plain_prefix(uri)
    path = local_path(uri)
    if not path.exists():
        raise DataError(f"{uri} does not exist; pass an existing path")
    return path


def _plain_prefix(uri: str) -> Path:
    """A local view of a prefix that cdseg did not write (e.g. a release uploaded by hand): each object is
    fetched into the storage cache and linked under its own name in a per-URI folder."""
    root = Path(tempfile.gettempdir()) / f"cdseg-release-{hashlib.sha256(str(uri).encode()).hexdigest()[:16]}"

    def walk(prefix: str, into: Path) -> None:
        for name in storage.list_dir(prefix):
            child = join(prefix, name)
            if storage.exists(child) and not name.endswith("/"):
                try:
                    cached = Path(storage.local_file(child))
                except storage.StorageError:  # a sub-prefix, not an object
                    walk(child, into / name)
                    continue
                into.mkdir(parents=True, exist_ok=True)
                link = into / name
                if link.is_symlink() or link.exists():
                    link.unlink()
                link.symlink_to(cached)
            else:
                walk(child.rstrip("/"), into / name.rstrip("/"))

    walk(str(uri).rstrip("/"), root)
    return root


def is_empty_dir(uri: str) -> bool:
    """True for an existing local folder with nothing in it (e.g. an output artifact path made in advance)."""
    if is_remote(uri):
        return False
    path = local_path(uri)
    return path.is_dir() and not any(path.iterdir())


def read_text_if_exists(uri: str) -> str | None:
    """The text at `uri`, or None when it does not exist (an unreadable file is an error naming it)."""
    if is_remote(uri):
        return storage.read_bytes(uri).decode("utf-8") if storage.exists(uri) else None
    path = local_path(uri)
    try:
        return path.read_text()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    except PermissionError as exc:
        raise unreadable(path, exc) from exc


@contextlib.contextmanager
def staged_output(uri: str, *, replace: bool = False) -> Iterator[Path]:
    """Yield a local temporary folder that becomes `uri` only if the block completes (a committed prefix for
    s3://; locally an atomic rename, without a storage manifest: a prepared dataset has its own)."""
    if is_remote(uri):
        with storage.staged_dir(uri, replace=replace) as tmp:
            yield Path(tmp)
        return
    with atomic_dir(local_path(uri), replace=replace) as tmp:
        tmp.chmod(0o755)  # mkdtemp makes it private; the dataset is meant to be shared
        yield tmp
