"""The local download cache: objects keyed by sha256, verified folders assembled from them by hard links."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from cdseg.storage.manifest import MANIFEST_NAME, Manifest
from cdseg.utils.atomic import atomic_dir


class Cache:
    """`root/objects/ab/abcdef...` (one file per sha256) and `root/dirs/<manifest sha>/` (folders)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def object_path(self, sha256: str) -> Path:
        """Where the object with this checksum lives (whether or not it is there yet)."""
        return self.root / "objects" / sha256[:2] / sha256

    def lookup(self, sha256: str, size: int | None) -> Path | None:
        """The cached copy of an object, if present with the expected size."""
        path = self.object_path(sha256)
        try:
            if size is None or path.stat().st_size == size:
                return path
        except FileNotFoundError:
            return None
        return None

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
        if (target / MANIFEST_NAME).is_file():
            return target
        with contextlib.suppress(FileExistsError), atomic_dir(target) as tmp:
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
