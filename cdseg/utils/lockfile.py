"""The portable lock: a lock file created with O_EXCL, naming its holder, kept fresh while the holder lives.

Used where `flock` cannot be trusted: a filesystem that refuses it (ENOLCK, EOPNOTSUPP: NFS mounted
`nolock` without local locks, some FUSE and SMB mounts) or an NFS mount whose locks are local to the client
(`local_lock=flock` / `all`, so two nodes would both get one). O_EXCL creation is atomic on NFSv3 and later.

The file holds `{"host", "pid", "pid_start", "started", "token"}` and its holder touches it every third of
`TTL_S`. A holder is dead when it ran on this host and its pid is gone (or now names another process), or,
from another host, when the file has not been touched for `TTL_S` (so hosts' clocks must agree to well within
it). A dead holder's file is taken over under a short-lived guard file, so of two contenders one wins.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

TTL_S = 60.0  # a holder on another host that has not touched its file for this long is dead
_GUARD_TTL_S = 10.0  # a takeover guard older than this was left by a contender that died mid-takeover

_FS_WITHOUT_SHARED_FLOCK = ("local_lock=flock", "local_lock=all")


def pid_start(pid: int) -> str | None:
    """The start time (clock ticks since boot) of process `pid`, or None when it is gone or unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]  # field 22; the name in parentheses may hold spaces


def identity() -> dict[str, Any]:
    """This process as a lock file names it."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": pid_start(os.getpid()),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "token": uuid.uuid4().hex}


def read_holder(path: Path) -> tuple[dict[str, Any], float] | None:
    """(the holder's record, seconds since the file was last touched), or None when there is no file."""
    try:
        with open(path, "rb") as f:
            data, age = f.read(4096), time.time() - os.fstat(f.fileno()).st_mtime
    except FileNotFoundError:
        return None
    try:
        info = json.loads(data or b"{}")
    except ValueError:
        info = {}
    return (info if isinstance(info, dict) else {}), age


def alive(info: dict[str, Any], age: float) -> bool:
    """Whether the holder of a lock file (its record, and how long since it touched the file) still runs."""
    if info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int):
        try:
            os.kill(info["pid"], 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # another user's process: it exists
        return info.get("pid_start") in (None, pid_start(info["pid"]))  # a reused pid is another process
    return age < TTL_S  # another host (or a record not written yet): judged by the last touch


def describe(info: dict[str, Any]) -> str:
    """`host H, pid P, started T` of a lock file's holder."""
    if not info.get("host"):
        return "holder unknown"
    return f"host {info['host']}, pid {info.get('pid', '?')}, started {info.get('started', '?')}"


def flock_is_node_local(path: Path, mountinfo: str | None = None) -> bool:
    """Whether `path` lies on an NFS mount whose flock locks are local to this client (`local_lock=flock|all`)."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return False
    target = os.path.realpath(path)
    best, options = "", ""
    for line in mountinfo.splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 6:
            continue
        point = fields[4].replace("\\040", " ")
        fstype, _, rest = line.split(" - ", 1)[1].partition(" ")
        if (target == point or target.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, options = point, f"{fstype} {fields[5]} {rest}"
    return options.startswith("nfs") and any(opt in options for opt in _FS_WITHOUT_SHARED_FLOCK)


def _create(path: Path, me: dict[str, Any]) -> bool:
    """Create the lock file holding `me`; False when it exists."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        return False
    try:
        os.write(fd, json.dumps({**me, "mode": "file"}).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


def _take_over(path: Path, stale: dict[str, Any], me: dict[str, Any]) -> bool:
    """Replace the dead holder `stale`'s file by ours, under a guard; False when someone else got there first."""
    guard = path.with_name(path.name + ".takeover")
    try:
        fd = os.open(guard, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        with contextlib.suppress(OSError):
            if time.time() - guard.stat().st_mtime > _GUARD_TTL_S:
                guard.unlink()  # its contender died mid-takeover
        return False
    os.close(fd)
    try:
        now = read_holder(path)
        if now is not None:
            if now[0] != stale or alive(*now):
                return False  # replaced since we read it
            path.unlink()
        return _create(path, me)
    finally:
        guard.unlink(missing_ok=True)


def acquire(path: Path) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """Create the lock file at `path`: (None, our record), or (the live holder's record, {}) when it is held."""
    me = identity()
    for _ in range(20):
        if _create(path, me):
            return None, me
        current = read_holder(path)
        if current is None:
            continue  # released meanwhile
        info, age = current
        if alive(info, age):
            return info, {}
        if _take_over(path, info, me):
            return None, me
        time.sleep(0.05)
    current = read_holder(path)
    return (current[0] if current else {}), {}


def release(path: Path, me: dict[str, Any]) -> None:
    """Remove the lock file if it is still ours."""
    current = read_holder(path)
    if current is not None and current[0].get("token") == me.get("token"):
        path.unlink(missing_ok=True)


class Toucher(threading.Thread):
    """Touches a lock file every third of `TTL_S`, so that other hosts see its holder alive."""

    def __init__(self, path: Path) -> None:
        super().__init__(name="cdseg-lock", daemon=True)
        self.path, self.stop = path, threading.Event()

    def run(self) -> None:
        while not self.stop.wait(TTL_S / 3):
            with contextlib.suppress(OSError):
                os.utime(self.path)
