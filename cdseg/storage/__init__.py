"""One URI-based storage interface: local paths, file://, s3://bucket/key and minio://bucket/key.

Files are written atomically; folders are committed with a manifest (`_cdseg_manifest.json`:
relative path, size, sha256 of every file) written last, so a half-written folder is never mistaken
for a complete one. Every object written is checksummed and verified when read back. Remote reads
go through a local cache keyed by sha256. Only `cdseg.storage.s3` imports boto3.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cdseg.storage import local as _local
from cdseg.storage.config import StorageConfig
from cdseg.storage.errors import IntegrityError, StorageError, StorageUnavailableError
from cdseg.storage.manifest import MANIFEST_NAME
from cdseg.storage.uri import is_remote, join, local_path, parse_remote

if TYPE_CHECKING:
    from cdseg.storage.lease import RemoteLease
    from cdseg.storage.remote import S3Store

__all__ = [
    "IntegrityError",
    "MANIFEST_NAME",
    "StorageConfig",
    "StorageError",
    "StorageUnavailableError",
    "check_output",
    "configure",
    "download_dir",
    "exists",
    "get_config",
    "is_empty_dir",
    "is_remote",
    "join",
    "list_dir",
    "local_dir",
    "local_file",
    "local_input",
    "local_path",
    "output_lease",
    "parse_remote",
    "read_bytes",
    "read_text",
    "read_text_if_exists",
    "remote_lease",
    "remove_dir",
    "staged_dir",
    "staged_output",
    "upload_dir",
    "write_bytes",
    "write_text",
]

_lock = threading.Lock()
_config = StorageConfig()
_store: S3Store | None = None
_leases: list[RemoteLease] = []


def configure(cfg: StorageConfig) -> None:
    """Use `cfg` (endpoint, region, cache, transfer sizes) for every later call in this process."""
    global _config, _store
    with _lock:
        _config = cfg
        if _store is not None:
            _store.close()
        _store = None


def get_config() -> StorageConfig:
    """The settings in use."""
    return _config


def _s3() -> S3Store:
    global _store
    with _lock:
        if _store is None:
            from cdseg.storage.remote import S3Store

            _store = S3Store(_config)
        return _store


def _call(method: str, uri: str | Path, *args: object) -> Any:
    remote = parse_remote(str(uri))  # a malformed URI fails before boto3 is imported
    return getattr(_s3(), method)(remote, *args)


def exists(uri: str | Path) -> bool:
    """True if `uri` is a file/object, a local folder, or a committed remote folder (one with a manifest)."""
    if is_remote(uri):
        return _call("exists", uri)
    return local_path(uri).exists()


def read_bytes(uri: str | Path) -> bytes:
    """The content of a file or object, verified against its recorded sha256 when there is one."""
    if is_remote(uri):
        return _call("read_bytes", uri)
    return _local.read_bytes(local_path(uri))


def read_text(uri: str | Path) -> str:
    """`read_bytes` decoded as UTF-8."""
    return read_bytes(uri).decode("utf-8")


def write_bytes(uri: str | Path, data: bytes) -> None:
    """Write a file atomically, or an object with its sha256 in the object's metadata."""
    if is_remote(uri):
        _check_owned(str(parse_remote(str(uri))))
        _call("write_bytes", uri, bytes(data))
    else:
        _local.write_bytes(local_path(uri), bytes(data))


def write_text(uri: str | Path, text: str) -> None:
    """`write_bytes` of UTF-8 text."""
    write_bytes(uri, text.encode("utf-8"))


def local_file(uri: str | Path) -> Path:
    """A local path to read `uri` from: the file itself, or a verified copy in the download cache."""
    if is_remote(uri):
        return _call("local_file", uri)
    return _local.existing_file(local_path(uri))


def local_dir(uri: str | Path) -> Path:
    """A local folder holding `uri`: the folder itself, or a verified cached copy of a committed prefix."""
    if is_remote(uri):
        return _call("local_dir", uri)
    return _local.existing_dir(local_path(uri))


@contextlib.contextmanager
def staged_dir(uri: str | Path, replace: bool = False) -> Iterator[Path]:
    """Yield an empty local folder; when the block succeeds, commit it to `uri` (manifest last).

    Locally this is an atomic rename; remotely every file is uploaded, then the manifest. If the
    block or the upload fails nothing is committed (uploaded objects are removed, best effort).
    """
    if not is_remote(uri):
        with _local.staged_dir(local_path(uri), replace) as tmp:
            yield tmp
        return
    remote = parse_remote(str(uri))
    store = _s3()
    store.check_writable_dir(remote, replace)
    tmp = store.cache.staging_dir()
    try:
        yield tmp
        _check_owned(str(remote))
        store.commit_dir(tmp, remote, replace)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_output(uri: str | Path, what: str = "output", *, inside: bool = False) -> None:
    """Fail at once, in one line, on a local output that is a file, lies under one, or is not writable by this
    user (`inside`: the command writes into the folder rather than replacing it); a remote URI is validated."""
    if is_remote(uri):
        parse_remote(str(uri))
    else:
        _local.check_output(local_path(uri), what, inside=inside)


def local_input(uri: str | Path, *, folder: bool | None = None) -> Path:
    """A local path to read the input `uri` from (see `cdseg.storage.inputs`)."""
    from cdseg.storage.inputs import local_input as resolve

    return resolve(str(uri), folder=folder)


def read_text_if_exists(uri: str | Path) -> str | None:
    """The text at `uri`, or None when there is no such file or object."""
    from cdseg.storage.inputs import read_text_if_exists as read

    return read(str(uri))


def is_empty_dir(uri: str | Path) -> bool:
    """True for an existing local folder with nothing in it."""
    from cdseg.storage.inputs import is_empty_dir as empty

    return empty(str(uri))


def staged_output(uri: str | Path, *, replace: bool = False) -> contextlib.AbstractContextManager[Path]:
    """A local folder that becomes `uri` when the block completes (see `cdseg.storage.inputs`)."""
    from cdseg.storage.inputs import staged_output as staged

    return staged(str(uri), replace=replace)


def list_dir(uri: str | Path) -> list[str]:
    """Sorted names of the entries directly inside a folder or prefix (sub-folders without '/')."""
    if is_remote(uri):
        return _call("list_dir", uri)
    return _local.list_dir(local_path(uri))


def upload_dir(local: str | Path, uri: str | Path, replace: bool = False) -> None:
    """Copy the local folder `local` to `uri` as a committed folder (manifest last)."""
    source = local_path(local)
    _local.existing_dir(source)
    if is_remote(uri):
        remote = parse_remote(str(uri))
        _check_owned(str(remote))
        _s3().commit_dir(source, remote, replace)  # checks for a committed folder itself
    else:
        _local.copy_dir(source, local_path(uri), replace)


def download_dir(uri: str | Path, local: str | Path, replace: bool = False) -> Path:
    """Copy the committed folder `uri` into the local folder `local` (atomically) and return it."""
    target = local_path(local)
    source = local_dir(uri)
    _local.copy_dir(source, target, replace)
    return target


def remove_dir(uri: str | Path) -> None:
    """Delete a committed folder: its manifest first (so it is never seen half-deleted), then its files.

    Only the files the manifest lists are deleted remotely; absent is fine.
    """
    if is_remote(uri):
        _check_owned(str(parse_remote(str(uri))))
        _call("remove_dir", uri)
    else:
        shutil.rmtree(local_path(uri), ignore_errors=True)


@contextlib.contextmanager
def remote_lease(uri: str | Path, what: str = "output", ttl_s: float = 120.0) -> Iterator[None]:
    """Hold the exclusive lease of the remote output `uri` for the block (renewed in a thread); a live holder
    makes it fail at once with `LeaseHeld`, naming it. An expired lease (a crashed holder) is taken over.
    While it is held, a write under `uri` after the lease was lost to another run raises `LeaseLost`."""
    from cdseg.storage.lease import RemoteLease, Renewer

    lease = RemoteLease(_s3().wire, parse_remote(str(uri)), ttl_s, what)
    lease.acquire()
    renewer = Renewer(lease)
    renewer.start()
    with _lock:
        _leases.append(lease)
    try:
        yield
    finally:
        with _lock:
            _leases.remove(lease)
        renewer.stop.set()
        renewer.join()
        with contextlib.suppress(StorageError):
            lease.release()


@contextlib.contextmanager
def output_lease(uri: str | Path, what: str = "output", ttl_s: float = 120.0) -> Iterator[None]:
    """Own the output `uri` for the block: a lock file beside a local folder (`cdseg.utils.lease`), a lease
    object in a remote prefix (`remote_lease`). A second run on the same output fails at once, naming the holder."""
    if is_remote(uri):
        with remote_lease(uri, what, ttl_s):
            yield
        return
    from cdseg.utils.lease import output_lease as local_lease

    with local_lease(local_path(uri), what):
        yield


def _check_owned(remote: str) -> None:
    """Refuse a write under an output whose lease this process lost (another run owns it now)."""
    with _lock:
        held = list(_leases)
    for lease in held:
        prefix = str(lease.output).rstrip("/") + "/"
        if remote.rstrip("/") + "/" == prefix or remote.startswith(prefix):
            lease.check()
