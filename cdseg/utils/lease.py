"""One owner per local output: an exclusive lock file naming its holder (host, pid, start time).

The lock is an `flock` on `<parent>/.<name>.lock`, beside the output rather than in it (an output
folder is swapped in whole by an atomic rename). The kernel drops it when the holder exits, however it
exits (kill -9 included), so a crashed run never blocks the next one; the file's text only says who
holds it. `flock` is per host on network filesystems that do not forward it: a local output shared
across nodes is owned per node (an s3:// output has no lease yet). While a run holds the lease, no other run is writing the output's temporaries, so they
are stale and may be removed (see `remove_stale`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from cdseg.errors import UserError

log = logging.getLogger(__name__)


class OutputBusy(UserError):
    """Another run holds the output (exit 2)."""


def lock_path(output: Path) -> Path:
    """The lock file of an output folder."""
    output = Path(output)
    return output.parent / f".{output.name}.lock"


@contextlib.contextmanager
def output_lease(output: Path, what: str = "output") -> Iterator[Path]:
    """Hold the exclusive lease of `output` for the block; a second holder fails at once with `OutputBusy`.

    The lock file is removed when the block ends (folders created for it are removed too when they
    stay empty), so an output's parent shows nothing of the lease after the run.
    """
    path = lock_path(output)
    made = [p for p in reversed(path.parents) if not p.exists()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = _locked(path, Path(output), what)
    except OSError as exc:
        _remove_empty(made)
        raise UserError(f"cannot create {path} to own --{what} {output} ({exc.strerror}); choose a writable "
                        f"--{what}") from exc
    except BaseException:
        _remove_empty(made)
        raise
    try:
        holder = {"host": socket.gethostname(), "pid": os.getpid(),
                  "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # while still locked: a run waiting on this inode sees it replaced and retries
        os.close(fd)  # releases the flock
        _remove_empty(made)


def _locked(path: Path, output: Path, what: str) -> int:
    """An open, exclusively locked descriptor of the lock file at `path` (the file that is there now)."""
    for _ in range(20):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise OutputBusy(f"--{what} {output} is in use by another cdseg run ({holder}); wait for it to "
                             f"finish or choose another --{what}") from None
        try:
            same = os.fstat(fd).st_ino == path.stat().st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the holder removed the file as we opened it: lock the new one
    raise OutputBusy(f"--{what} {output}: its lock file {path} keeps changing; another run is starting on it")


def _remove_empty(folders: list[Path]) -> None:
    for folder in reversed(folders):
        with contextlib.suppress(OSError):
            folder.rmdir()


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"host {info['host']}, pid {info['pid']}, started {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"


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
