"""One owner per local output: an exclusive lock file naming its holder (host, pid, start time).

The lock is `<parent>/.<name>.lock`, beside the output rather than in it (an output folder is swapped in
whole by an atomic rename). Where the filesystem supports it the lock is an `flock` on that file: the kernel
drops it when the holder exits, however it exits (kill -9 included), so a crashed run never blocks the next
one, and on NFSv4 (and NFSv3 with lockd) Linux forwards it to the server as a whole-file POSIX lock, so it
holds across nodes. Where flock is refused (ENOLCK, EOPNOTSUPP: NFS mounted `nolock`, some FUSE/SMB mounts)
or is local to one NFS client (`local_lock=flock|all`), the lock file itself is the lock (created with
O_EXCL; see `cdseg.utils.lockfile`): a holder on this host is dead when its pid is, one on another host
when it stopped touching the file. While a run holds the lease, no other run is writing the output's
temporaries, so they are stale and may be removed (see `remove_stale`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cdseg.errors import UserError
from cdseg.utils import lockfile

log = logging.getLogger(__name__)

#: errors of flock on a filesystem that does not support it (rather than a lock held by someone else)
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class OutputBusy(UserError):
    """Another run holds the output (exit 2)."""


def lock_path(output: Path) -> Path:
    """The lock file of an output folder."""
    output = Path(output)
    return output.parent / f".{output.name}.lock"


def _busy(output: Path, what: str, info: dict[str, Any]) -> OutputBusy:
    return OutputBusy(f"--{what} {output} is in use by another cdseg run ({lockfile.describe(info)}); wait for it "
                      f"to finish or choose another --{what}")


@contextlib.contextmanager
def output_lease(output: Path, what: str = "output") -> Iterator[Path]:
    """Hold the exclusive lease of `output` for the block; a second holder fails at once with `OutputBusy`.

    The lock file is removed when the block ends (folders created for it are removed too when they
    stay empty), so an output's parent shows nothing of the lease after the run.
    """
    path = lock_path(output)
    made = [p for p in reversed(path.parents) if not p.exists()]
    fd: int | None = None
    me: dict[str, Any] = {}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if lockfile.flock_is_node_local(path.parent):
            log.debug("%s is on NFS with node-local flock; owning it with a lock file", path.parent)
        else:
            fd = _locked(path, Path(output), what)
        if fd is None:
            holder, me = lockfile.acquire(path)
            if holder is not None:
                raise _busy(Path(output), what, holder)
    except OSError as exc:
        _remove_empty(made)
        raise UserError(f"cannot create {path} to own --{what} {output} ({exc.strerror}); choose a writable "
                        f"--{what}") from exc
    except BaseException:
        _remove_empty(made)
        raise
    toucher = lockfile.Toucher(path)  # other hosts judge a lock-file holder (or a flock one) alive by its touches
    try:
        if fd is not None:
            me = {**lockfile.identity(), "mode": "flock"}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(me).encode(), 0)
        toucher.start()
        yield path
    finally:
        toucher.stop.set()
        if toucher.is_alive():
            toucher.join()
        if fd is not None:
            with contextlib.suppress(OSError):
                path.unlink()  # while still locked: a run waiting on this inode sees it replaced and retries
            os.close(fd)  # releases the flock
        else:
            with contextlib.suppress(OSError):
                lockfile.release(path, me)
        _remove_empty(made)


def _locked(path: Path, output: Path, what: str) -> int | None:
    """An open, exclusively flocked descriptor of the lock file at `path` (the file that is there now), or None
    when this filesystem does not support flock (the caller falls back to the lock file)."""
    for _ in range(20):
        try:
            fd, created = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666), True
        except FileExistsError:
            try:
                fd, created = os.open(path, os.O_RDWR), False
            except FileNotFoundError:
                continue  # removed as we opened it
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise _busy(output, what, holder) from None
        except OSError as exc:
            os.close(fd)
            if created:
                path.unlink(missing_ok=True)  # the lock file of the fallback is created with O_EXCL
            if exc.errno in _NO_FLOCK:
                log.debug("flock is not supported on %s (%s); owning it with a lock file", path.parent, exc.strerror)
                return None
            raise
        try:
            same = os.fstat(fd).st_ino == path.stat().st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)  # the holder removed the file as we opened it: lock the new one
            continue
        current = _holder(fd)  # a run that owns it with a lock file (flock refused where it runs) takes no flock
        if current.get("mode") == "file" and lockfile.alive(current, time.time() - os.fstat(fd).st_mtime):
            os.close(fd)
            raise _busy(output, what, current)
        return fd
    raise OutputBusy(f"--{what} {output}: its lock file {path} keeps changing; another run is starting on it")


def _remove_empty(folders: list[Path]) -> None:
    for folder in reversed(folders):
        with contextlib.suppress(OSError):
            folder.rmdir()


def _holder(fd: int) -> dict[str, Any]:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def remove_stale(output: Path, patterns: tuple[str, ...] = (".{name}.tmp-*", ".{name}.old-*")) -> int:
    """Remove temporaries that dead runs left beside `output` (call only while holding its lease)."""
    output = Path(output)
    removed = 0
    for pattern in patterns:
        for stale in output.parent.glob(pattern.format(name=output.name)):
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
            removed += 1
    if removed:
        log.info("removed %d temporar%s left beside %s by an interrupted run", removed, "y" if removed == 1 else "ies",
                 output)
    return removed
