"""Where data commands meet `cdseg.storage`: the one URI parser, and local views of remote inputs.

The functions here resolve an input URI to a local path and stage an output folder, through
`cdseg.storage` (which imports boto3 only when a remote URI is used).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import cdseg.storage as _store
from cdseg.errors import DataError
from cdseg.storage.uri import is_remote as _is_remote
from cdseg.utils.atomic import atomic_dir


def _storage() -> ModuleType:
    return _store


def configure(cfg: object) -> None:
    """Apply a root config's `storage` section (if it has one) before any URI is touched."""
    section = getattr(cfg, "storage", None)
    if section is not None:
        _store.configure(section)


def is_remote(uri: str) -> bool:
    """True for object-store URIs (s3://, minio://, any case); an unsupported scheme is a StorageError."""
    return _is_remote(str(uri))


def _local(uri: str) -> Path:
    text = str(uri)
    return Path(text[len("file://") :] if text.startswith("file://") else text)


def _need_storage(uri: str) -> ModuleType:
    return _store


def local_input(uri: str, *, folder: bool | None = None) -> Path:
    """A local path to read `uri` from (a cached copy for s3://); `folder` says which kind is expected."""
    if is_remote(uri):
        storage = _need_storage(uri)
        if folder is False or str(uri).lower().endswith(".zip"):
            return Path(storage.local_file(uri))
        try:
            return Path(storage.local_dir(uri))
        except storage.StorageUnavailableError:
            raise
        except storage.StorageError:
            if folder:  # a prepared dataset must be a committed folder
                raise
            return _plain_prefix(storage, uri)
    path = _local(uri)
    if not path.exists():
        raise DataError(f"{uri} does not exist; pass an existing path")
    return path


def _plain_prefix(storage: ModuleType, uri: str) -> Path:
    """A local view of a prefix that cdseg did not write (e.g. a release uploaded by hand): each object is
    fetched into the storage cache and linked under its own name in a per-URI folder."""
    import hashlib
    import tempfile

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


def exists(uri: str) -> bool:
    """Whether `uri` exists (file, folder or prefix)."""
    if is_remote(uri):
        return bool(_need_storage(uri).exists(uri))
    return _local(uri).exists()


def is_empty_dir(uri: str) -> bool:
    """True for an existing local folder with nothing in it (e.g. an output artifact path made in advance)."""
    path = _local(uri)
    return not is_remote(uri) and path.is_dir() and not any(path.iterdir())


def read_text(uri: str) -> str | None:
    """The text at `uri`, or None when it does not exist."""
    if is_remote(uri):
        storage = _need_storage(uri)
        return storage.read_bytes(uri).decode("utf-8") if storage.exists(uri) else None
    path = _local(uri)
    try:
        return path.read_text()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    except PermissionError as exc:
        from cdseg.storage.local import unreadable

        raise unreadable(path, exc) from exc


def join(uri: str, *parts: str) -> str:
    """`uri/part/part`, for local paths and URIs alike."""
    return "/".join([str(uri).rstrip("/"), *parts])


@contextlib.contextmanager
def staged_output(uri: str, *, replace: bool = False) -> Iterator[Path]:
    """Yield a local temporary folder that becomes `uri` only if the block completes."""
    if is_remote(uri):
        with _need_storage(uri).staged_dir(uri, replace=replace) as tmp:
            yield Path(tmp)
        return
    with atomic_dir(_local(uri), replace=replace) as tmp:
        tmp.chmod(0o755)  # mkdtemp makes it private; the dataset is meant to be shared
        yield tmp
