"""Committed folders, verified reads and the download cache on top of S3 (no boto3 here: see `s3.py`).

Every byte uploaded or downloaded is hashed as it streams (one pass) and checked against the sha256
recorded at write time: in the object's metadata (single objects, `write_bytes`) or in the folder
manifest written last (folders). Downloads are parallel ranged GETs consumed strictly in order.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import logging
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from cdseg.storage.cache import Cache
from cdseg.storage.config import StorageConfig
from cdseg.storage.errors import StorageError
from cdseg.storage.manifest import MANIFEST_NAME, FileEntry, HashingReader, Manifest, iter_files, verify
from cdseg.storage.s3 import S3Wire
from cdseg.storage.uri import Remote

log = logging.getLogger("cdseg.storage")
META_SHA = "sha256"  # stored as x-amz-meta-sha256
_MiB = 1024 * 1024
_WINDOW = 32  # folder files in flight at once (bounds open file handles)


class S3Store:
    """The storage operations on s3:// and minio:// locations."""

    def __init__(self, cfg: StorageConfig) -> None:
        self.cfg = cfg
        self.wire = S3Wire(cfg)
        self.cache = Cache(cfg.resolved_cache_dir())
        self._manifests: dict[tuple[str, str, str], Manifest] = {}

    def close(self) -> None:
        """Stop the transfer threads."""
        self.wire.close()

    def _call(self, remote: Remote, action: str, fn: Any) -> Any:
        return self.wire.call(remote, action, fn)

    # ------------------------------------------------------------------ manifests
    def _manifest_at(self, prefix: Remote, *, refresh: bool = False) -> Manifest | None:
        """The manifest committed at `prefix` (cached per process), or None."""
        cache_key = (prefix.scheme, prefix.bucket, prefix.key)
        if not refresh and cache_key in self._manifests:
            return self._manifests[cache_key]
        got = self.wire.get(prefix.child(MANIFEST_NAME))
        if got is None:
            self._manifests.pop(cache_key, None)
            return None
        data, sha, meta = got
        where = str(prefix.child(MANIFEST_NAME))
        verify(meta.get(META_SHA), sha, None, len(data), where)
        manifest = Manifest.from_bytes(data, where)
        self._manifests[cache_key] = manifest
        return manifest

    def _entry_for(self, remote: Remote, *, refresh: bool = False) -> FileEntry | None:
        """The manifest record of an object inside a committed folder (nearest enclosing manifest)."""
        parts = remote.key.split("/")
        for depth in range(len(parts) - 1, -1, -1):
            prefix = Remote(remote.scheme, remote.bucket, "/".join(parts[:depth]))
            manifest = self._manifest_at(prefix, refresh=refresh)
            if manifest is not None:
                return manifest.files.get("/".join(parts[depth:]))
        return None

    def _expected(self, remote: Remote, meta: dict[str, str], *, refresh: bool = False) -> tuple[str | None, int | None]:
        if meta.get(META_SHA):
            return meta[META_SHA], None
        entry = self._entry_for(remote, refresh=refresh)
        return (entry.sha256, entry.size) if entry else (None, None)

    def _verify(self, remote: Remote, meta: dict[str, str], sha: str, size: int) -> str | None:
        """Check a streamed object against its record (re-reading a manifest cached before a replace)."""
        expected, expected_size = self._expected(remote, meta)
        if expected is not None and not meta.get(META_SHA) and (expected != sha or expected_size not in (None, size)):
            expected, expected_size = self._expected(remote, meta, refresh=True)
        verify(expected, sha, expected_size, size, str(remote))
        if expected is None:
            log.debug("%s has no recorded sha256 (not written by cdseg); read unverified", remote)
        return expected

    # ------------------------------------------------------------------ files
    def exists(self, remote: Remote) -> bool:
        """An object at the key, or a committed folder (manifest) below it."""
        if not remote.key:
            self.wire.check_bucket(remote)
            return True
        if self.wire.head(remote) is not None:
            return True
        return self.wire.head(remote.child(MANIFEST_NAME)) is not None

    def read_bytes(self, remote: Remote) -> bytes:
        """An object's bytes, verified."""
        if not remote.key:
            raise StorageError(f"{remote} names a bucket, not an object; add the object's key")
        got = self.wire.get(remote)
        if got is None:
            raise StorageError(f"{remote} does not exist; check the URI (or run the step that writes it)")
        data, sha, meta = got
        self._verify(remote, meta, sha, len(data))
        return data

    def write_bytes(self, remote: Remote, data: bytes) -> None:
        """Upload one object with its sha256 in the metadata."""
        if not remote.key:
            raise StorageError(f"{remote} names a bucket, not an object; add the object's key")
        sha = hashlib.sha256(data).hexdigest()

        self._call(remote, "write", lambda: self.wire.upload_stream(
            remote, io.BytesIO(data), metadata={META_SHA: sha}).result())

    def local_file(self, remote: Remote) -> Path:
        """A verified local copy of an object, from the cache when its checksum is already there."""
        if not remote.key:
            raise StorageError(f"{remote} names a bucket, not an object; add the object's key")
        head = self.wire.head(remote)
        if head is None:
            raise StorageError(f"{remote} does not exist; check the URI (or run the step that writes it)")
        meta = dict(head.get("Metadata") or {})
        size = int(head["ContentLength"])
        expected, _ = self._expected(remote, meta)
        if expected is not None:
            cached = self.cache.lookup(expected, size)
            if cached is not None:
                return self.cache.named(expected, _basename(remote))
        stored = self._download(remote, size, meta, head.get("ETag"))
        self._prune({stored.name})
        return self.cache.named(stored.name, _basename(remote))  # stored.name is the sha256

    def _download(self, remote: Remote, size: int, meta: dict[str, str], etag: str | None) -> Path:
        """Fetch into the cache, verify, admit; returns the checksum-named path."""
        with self.cache.incoming() as tmp:
            sha, got, _meta = self._call(remote, "download", functools.partial(self._fetch_to, remote, tmp, size, etag))
            self._verify(remote, meta, sha, got)
            return self.cache.admit(tmp, sha)

    def _fetch_to(self, remote: Remote, path: Path, size: int, etag: str | None) -> tuple[str, int, dict[str, str]]:
        """Download to `path`: parallel ranged GETs, written and hashed strictly in order (one pass).

        At most `max_concurrency + 2` parts are in memory; every part must carry the same ETag, so
        an object replaced during the download is an error rather than a spliced file.
        """
        part = int(self.cfg.multipart_chunksize_mb * _MiB)
        if size < int(self.cfg.multipart_threshold_mb * _MiB):
            ranges: list[tuple[int, int | None]] = [(0, None)]
        else:
            ranges = [(start, min(start + part, size) - 1) for start in range(0, size, part)]
        if len(ranges) == 1:  # one GET in this thread (also keeps pool workers from waiting on the pool)
            data, part_etag, only_meta = self.wire.fetch_range(remote, *ranges[0])
            if etag is not None and part_etag and part_etag != etag:
                raise StorageError(f"{remote} was replaced while it was being downloaded; retry")
            with open(path, "wb") as handle:
                handle.write(data)
            return hashlib.sha256(data).hexdigest(), len(data), only_meta
        pool = self.wire.pool()
        window = self.cfg.max_concurrency + 2
        pending: deque[Future[tuple[bytes, str, dict[str, str]]]] = deque()
        digest = hashlib.sha256()
        written = 0
        meta: dict[str, str] = {}
        next_index = 0
        try:
            with open(path, "wb") as handle:
                while next_index < len(ranges) or pending:
                    while next_index < len(ranges) and len(pending) < window:
                        pending.append(pool.submit(self.wire.fetch_range, remote, *ranges[next_index]))
                        next_index += 1
                    data, part_etag, part_meta = pending.popleft().result()
                    if etag is None:
                        etag, meta = part_etag, part_meta
                    elif part_etag and part_etag != etag:
                        raise StorageError(f"{remote} was replaced while it was being downloaded; retry")
                    meta = meta or part_meta
                    digest.update(data)
                    handle.write(data)
                    written += len(data)
        finally:
            for future in pending:
                future.cancel()
        return digest.hexdigest(), written, meta

    # ------------------------------------------------------------------ folders
    def local_dir(self, remote: Remote) -> Path:
        """A verified local copy of a committed folder (files from the cache, fetched in parallel)."""
        got = self.wire.get(remote.child(MANIFEST_NAME))
        if got is None:
            raise StorageError(
                f"{remote} is not a committed folder (no {MANIFEST_NAME}): it is missing or was only partly "
                "written; check the URI or re-run the step that writes it"
            )
        data, sha, meta = got
        where = str(remote.child(MANIFEST_NAME))
        verify(meta.get(META_SHA), sha, None, len(data), where)
        manifest = Manifest.from_bytes(data, where)
        self._manifests[(remote.scheme, remote.bucket, remote.key)] = manifest
        entries = list(manifest.files.values())
        with ThreadPoolExecutor(min(4, os.cpu_count() or 1), thread_name_prefix="cdseg-cache-check") as pool:
            # every cached object is hashed before use (once per process); hashlib releases the GIL
            hits = list(pool.map(lambda e: self.cache.lookup(e.sha256, e.size), entries))
        missing = [e for e, hit in zip(entries, hits, strict=True) if hit is None]
        if missing:
            self._fetch_all(remote, missing)
            self._prune({e.sha256 for e in entries})
        return self.cache.folder(sha, manifest, data)

    def _prune(self, keep: set[str]) -> None:
        """Keep the download cache under its size cap (after it grew), never evicting `keep`."""
        if self.cfg.cache_max_gb > 0:
            self.cache.prune(int(self.cfg.cache_max_gb * 1e9), keep)

    def _fetch_all(self, remote: Remote, entries: list[FileEntry]) -> None:
        """Fetch a folder's missing files into the cache: small ones in parallel, large ones part-parallel."""
        threshold = int(self.cfg.multipart_threshold_mb * _MiB)
        small = [e for e in entries if e.size < threshold]
        futures = [(e, self.wire.pool().submit(self._fetch_entry, remote.child(e.path), e)) for e in small]
        try:
            for entry, future in futures:
                self._call(remote.child(entry.path), "download", future.result)
        finally:
            for _entry, future in futures:
                future.cancel()
        for entry in entries:
            if entry.size >= threshold:
                self._fetch_entry(remote.child(entry.path), entry)

    def _fetch_entry(self, obj: Remote, entry: FileEntry) -> None:
        with self.cache.incoming() as tmp:
            sha, size, _meta = self._call(obj, "download", functools.partial(self._fetch_to, obj, tmp, entry.size, None))
            verify(entry.sha256, sha, entry.size, size, str(obj))
            self.cache.admit(tmp, entry.sha256)

    def check_writable_dir(self, remote: Remote, replace: bool) -> None:
        """Fail early when a committed folder is already there and may not be replaced."""
        if not remote.key:
            raise StorageError(f"{remote} is a bucket root; write folders under a prefix (s3://bucket/prefix)")
        if not replace and self.wire.head(remote.child(MANIFEST_NAME)) is not None:
            raise StorageError(f"{remote} already holds a committed folder; choose another output or allow replacing it")

    def commit_dir(self, source: Path, remote: Remote, replace: bool) -> None:
        """Upload every file of `source` (hashed while streaming), then the manifest, last."""
        if not remote.key:
            raise StorageError(f"{remote} is a bucket root; write folders under a prefix (s3://bucket/prefix)")
        manifest_obj = remote.child(MANIFEST_NAME)
        old = self._manifest_at(remote, refresh=True)
        if old is not None:
            if not replace:
                raise StorageError(f"{remote} already holds a committed folder; choose another output or allow replacing it")
            # Un-commit first: readers must never pair the old manifest with new objects.
            self.wire.delete(manifest_obj)
        manifest = Manifest()
        uploaded: list[str] = []
        try:
            files = iter_files(source)
            for start in range(0, len(files), _WINDOW):
                with contextlib.ExitStack() as stack:
                    pending = []
                    for rel, path in files[start : start + _WINDOW]:
                        obj = remote.child(rel)
                        size = path.stat().st_size
                        reader = HashingReader(stack.enter_context(open(path, "rb")))
                        future = self._call(obj, "upload", functools.partial(self.wire.upload_stream, obj, reader, size))
                        pending.append((rel, obj, size, reader, future))
                    for rel, obj, size, reader, future in pending:
                        self._call(obj, "upload", future.result)
                        uploaded.append(obj.key)
                        if reader.size != size:
                            raise StorageError(f"{source / rel} changed size while it was uploaded to {obj}; retry")
                        manifest.add(FileEntry(rel, reader.size, reader.hexdigest()))
            body = manifest.to_bytes()
            stale = sorted({remote.child(r).key for r in (old.files if old else {})} - set(uploaded))
            self.wire.delete_keys(remote, stale)
            self.wire.put(manifest_obj, body, {META_SHA: hashlib.sha256(body).hexdigest()})
        except BaseException:
            with contextlib.suppress(Exception):
                self.wire.delete_keys(remote, uploaded)
            raise
        self._manifests[(remote.scheme, remote.bucket, remote.key)] = manifest

    def remove_dir(self, remote: Remote) -> None:
        """Un-commit a folder (manifest first), then delete the files its manifest listed."""
        if not remote.key:
            raise StorageError(f"{remote} is a bucket root; refusing to delete it")
        manifest = self._manifest_at(remote, refresh=True)
        if manifest is None:
            return
        self.wire.delete(remote.child(MANIFEST_NAME))
        self._manifests.pop((remote.scheme, remote.bucket, remote.key), None)
        self.wire.delete_keys(remote, sorted(remote.child(rel).key for rel in manifest.files))

    def list_dir(self, remote: Remote) -> list[str]:
        """Names inside a prefix: from its manifest if committed, else from a delimiter listing."""
        manifest = self._manifest_at(remote, refresh=True)
        if manifest is not None:
            return sorted({rel.split("/", 1)[0] for rel in manifest.files})
        names = self.wire.list_names(remote)
        names.discard(MANIFEST_NAME)
        names.discard("")
        if not names and remote.key:
            raise StorageError(f"{remote} does not exist (nothing under that prefix); check the URI")
        return sorted(names)


def _basename(remote: Remote) -> str:
    return remote.key.rsplit("/", 1)[-1]
