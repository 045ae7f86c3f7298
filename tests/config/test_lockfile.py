"""The local lease where flock cannot be trusted (NFS without lockd or with node-local locks, FUSE, SMB):
a lock file created with O_EXCL names its holder; a dead holder's file is taken over, a live one refuses.
The fallback is forced by making flock fail as such filesystems do (ENOLCK)."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cdseg.utils import lockfile
from cdseg.utils.lease import OutputBusy, lock_path, output_lease

_NO_FLOCK = ("import errno, fcntl\n"
             "def refuse(fd, op): raise OSError(errno.ENOLCK, 'No locks available')\n"
             "fcntl.flock = refuse\n")
_HOLD = ("import sys, time; from pathlib import Path; from cdseg.utils.lease import output_lease\n"
         "with output_lease(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(60)\n")


@pytest.fixture
def no_flock(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(fd: int, op: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", refuse)


def _holder(out: Path, *, flock: bool) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", ("" if flock else _NO_FLOCK) + _HOLD, str(out)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait()


def test_without_flock_a_lock_file_gives_one_owner(tmp_path: Path, no_flock: None) -> None:
    out = tmp_path / "out"
    with output_lease(out) as lock:
        info = json.loads(lock.read_text())
        assert info["mode"] == "file" and info["pid"] == os.getpid() and info["host"] == socket.gethostname()
        busy = rf"--output {out} is in use by another cdseg run \(host .+, pid {os.getpid()}, started .+Z\)"
        with pytest.raises(OutputBusy, match=busy), output_lease(out):
            pass
        assert lock.is_file()  # the refused run did not remove the holder's file
    assert not lock_path(out).exists()
    with output_lease(out):
        pass


def test_another_process_holds_it_until_killed(tmp_path: Path, no_flock: None) -> None:
    out = tmp_path / "out"
    holder = _holder(out, flock=False)
    try:
        with pytest.raises(OutputBusy, match=rf"pid {holder.pid}, started "), output_lease(out):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert lock_path(out).is_file()  # kill -9 leaves the file; its pid is gone, so it is stale
    with output_lease(out) as lock:
        assert json.loads(lock.read_text())["pid"] == os.getpid()


def test_flock_and_lock_file_runs_exclude_each_other(tmp_path: Path) -> None:
    out = tmp_path / "out"
    holder = _holder(out, flock=False)  # owns it with a lock file (flock refused where it runs)
    try:
        with pytest.raises(OutputBusy, match=rf"pid {holder.pid},"), output_lease(out):  # this one has flock
            pass
    finally:
        _stop(holder)
    holder = _holder(out, flock=True)
    try:
        with pytest.raises(OutputBusy, match=rf"pid {holder.pid},"):
            lockfile_contender(out)
    finally:
        _stop(holder)


def lockfile_contender(out: Path) -> None:
    """A run where flock is refused, contending with a flock holder (it sees the holder's record, alive)."""
    import unittest.mock

    def refuse(fd: int, op: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    with unittest.mock.patch.object(fcntl, "flock", refuse), output_lease(out):
        pass


@pytest.mark.parametrize("age, held", [(5.0, True), (lockfile.TTL_S * 2, False)])
def test_a_holder_on_another_host_is_judged_by_its_touches(tmp_path: Path, no_flock: None, age: float,
                                                           held: bool) -> None:
    out = tmp_path / "out"
    lock = lock_path(out)
    lock.write_text(json.dumps({"host": "node-7", "pid": 12, "started": "2026-01-01T00:00:00Z", "mode": "file"}))
    os.utime(lock, (time.time() - age, time.time() - age))
    if held:
        with pytest.raises(OutputBusy, match=r"host node-7, pid 12, started 2026-01-01T00:00:00Z"), output_lease(out):
            pass
        return
    with output_lease(out):  # node-7 crashed: its file went untouched for longer than the time to live
        assert json.loads(lock.read_text())["host"] == socket.gethostname()


def test_a_reused_pid_is_not_the_holder(tmp_path: Path, no_flock: None) -> None:
    out = tmp_path / "out"
    lock = lock_path(out)
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "pid_start": "1", "mode": "file"}))
    with output_lease(out):  # the pid lives, but it is a process started at another time
        assert json.loads(lock.read_text())["pid_start"] == lockfile.pid_start(os.getpid())


def test_the_holder_touches_its_file(tmp_path: Path, no_flock: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lockfile, "TTL_S", 0.3)
    with output_lease(tmp_path / "out") as lock:
        os.utime(lock, (0, 0))
        time.sleep(0.4)
        assert time.time() - lock.stat().st_mtime < 1


_MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:40 / /mnt/shared rw,relatime shared:2 - nfs4 srv:/export rw,vers=4.2,local_lock=none,addr=10.0.0.2
41 22 0:41 / /mnt/old rw,relatime shared:3 - nfs srv:/old rw,vers=3,nolock,local_lock=all,addr=10.0.0.2
42 41 0:42 / /mnt/old/inner rw,relatime shared:4 - ext4 /dev/sdb1 rw
"""


@pytest.mark.parametrize("path, local", [("/mnt/shared/runs/x", False), ("/mnt/old/runs/x", True),
                                         ("/mnt/old/inner/x", False), ("/home/x", False), ("/mnt/oldish/x", False)])
def test_nfs_mounts_with_node_local_flock_are_recognised(path: str, local: bool) -> None:
    assert lockfile.flock_is_node_local(Path(path), _MOUNTINFO) is local
