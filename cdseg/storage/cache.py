"""The local download cache: objects keyed by sha256, verified folders assembled from them by hard links."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from cdseg.storage.manifest import MANIFEST_NAME, Manifest
from cdseg.utils.atomic import atomic_dir
from cdseg.utils.hashing import sha256_file

log = logging.getLogger(__name__)
#: Cached objects whose sha256 this process has checked: path -> (inode, size, mtime) at the time.
_verified: dict[Path, tuple[int, int, int]] = {}


class Cache:
    """`root/objects/ab/abcdef...` (one file per sha256) and `root/dirs/<manifest sha>/` (folders)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def object_path(self, sha256: str) -> Path:
        """Where the object with this checksum lives (whether or not it is there yet)."""
        return self.root / "objects" / sha256[:2] / sha256

    def lookup(self, sha256: str, size: int | None) -> Path | None:
        """The cached copy of an object, if present with the expected size and checksum.

        A copy whose bytes no longer hash to its name (bit rot, an edit behind cdseg's back) is removed
        and reported as absent, so that the caller downloads it again. Each object is hashed once per
        process (while its inode, size and mtime stay the same).
        """
        path = self.object_path(sha256)
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        if size is not None and st.st_size != size:
            return None
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)  # not ctime: marking an object used changes it
        if _verified.get(path) == stamp:
            self._used(path, st)
            return path
        if sha256_file(path) != sha256:
            log.warning("cached object %s does not match its sha256; downloading it again", path)
            path.unlink(missing_ok=True)
            return None
        _verified[path] = stamp
        self._used(path, st)
        return path

    @staticmethod
    def _used(path: Path, st: os.stat_result) -> None:
        """Record that an object was just used (its atime; mtime is kept), for eviction by last use."""
        with contextlib.suppress(OSError):
            os.utime(path, ns=(time.time_ns(), st.st_mtime_ns))

    def prune(self, max_bytes: int, keep: set[str], min_age_s: float = 3600.0) -> int:
        """Evict the objects used longest ago until the cache's objects fit in `max_bytes`; returns bytes freed.

        Never evicts `keep` (the checksums the caller is about to use) or an object used within `min_age_s`
        (another process may be reading it). A `dirs/` folder or `named/` link holding an evicted object
        goes with it.
        """
        objects = []
        for path in (self.root / "objects").glob("*/*"):
            with contextlib.suppress(OSError):
                st = path.stat()
                objects.append((st.st_atime_ns, st.st_size, path))
        total = sum(size for _, size, _ in objects)
        if max_bytes <= 0 or total <= max_bytes:
            return 0
        now, freed, evicted = time.time_ns(), 0, set()
        for used, size, path in sorted(objects):
            if total - freed <= max_bytes:
                break
            if path.name in keep or now - used < min_age_s * 1e9:
                continue
            path.unlink(missing_ok=True)
            _verified.pop(path, None)
            shutil.rmtree(self.root / "named" / path.name, ignore_errors=True)
            evicted.add(path.name)
            freed += size
        for folder in (self.root / "dirs").glob("*"):
            try:
                listed = {e.sha256 for e in Manifest.from_bytes((folder / MANIFEST_NAME).read_bytes(), str(folder)).files.values()}
            except Exception:  # noqa: BLE001 - a damaged folder is rebuilt from the objects when next used
                listed = evicted
            if listed & evicted:
                shutil.rmtree(folder, ignore_errors=True)
        if evicted:
            log.info("download cache over %.1f GB: evicted %d objects (%.1f GB) used longest ago", max_bytes / 1e9,
                     len(evicted), freed / 1e9)
        return freed

    @contextlib.contextmanager
    def incoming(self) -> Iterator[Path]:
        """A temporary file inside the cache (same filesystem, so `admit` is a rename); removed on error."""
        tmp_root = self.root / "tmp"
        tmp_root.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="dl-", dir=tmp_root)
        os.close(fd)
        path = Path(name)
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)

    def admit(self, tmp: Path, sha256: str) -> Path:
        """Move a verified download into place under its checksum (concurrent writers are harmless)."""
        target = self.object_path(sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(tmp, 0o444)
        os.replace(tmp, target)
        return target

    def named(self, sha256: str, name: str) -> Path:
        """The cached object under its own file name (`named/<sha>/<name>`: extensions survive for readers
        that sniff them), a hard link to the checksum-named copy."""
        source = self.object_path(sha256)
        target = self.root / "named" / sha256 / name
        if target.is_file() and target.stat().st_ino == source.stat().st_ino:
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.unlink(missing_ok=True)
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
        os.replace(tmp, target)
        return target

    def staging_dir(self) -> Path:
        """A fresh folder for `staged_dir` uploads, on the cache's filesystem."""
        root = self.root / "staging"
        root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="stage-", dir=root))

    def folder(self, manifest_sha: str, manifest: Manifest, manifest_bytes: bytes) -> Path:
        """The folder whose files are all cached: built once (atomically) from hard links, then reused."""
        target = self.root / "dirs" / manifest_sha
        stale = (target / MANIFEST_NAME).is_file() and not self._links_current(target, manifest)
        if (target / MANIFEST_NAME).is_file() and not stale:
            return target
        with contextlib.suppress(FileExistsError), atomic_dir(target, replace=stale) as tmp:
            for rel, entry in manifest.files.items():
                dest = tmp / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                source = self.object_path(entry.sha256)
                try:
                    os.link(source, dest)
                except OSError:
                    shutil.copyfile(source, dest)
            (tmp / MANIFEST_NAME).write_bytes(manifest_bytes)
        return target

    def _links_current(self, folder: Path, manifest: Manifest) -> bool:
        """Whether every file of an assembled folder is still its (verified) cached object."""
        for rel, entry in manifest.files.items():
            try:
                if (folder / rel).stat().st_ino != self.object_path(entry.sha256).stat().st_ino:
                    return False
            except FileNotFoundError:
                return False
        return True
