"""This process's descendants, and stopping them: for runners that start subprocesses they do not stop.

KFP's local `SubprocessRunner` starts every pipeline task as a child Python and waits for it; when the
waiting process is interrupted (SIGTERM, Ctrl-C) the child is left running (an orphan training job that
holds the cores and keeps writing). `stop_descendants()` ends them: SIGTERM first (a cdseg task cleans up
like an interrupted command), SIGKILL for what is still there after the grace period.

Linux reads the process tree from /proc; elsewhere there is nothing to read and nothing is stopped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path


def _stat(path: Path) -> tuple[str, int, int] | None:
    """(state, parent pid, session id) from a /proc/<pid>/stat file; None when it is gone."""
    try:
        fields = path.read_text().rsplit(")", 1)[1].split()  # the command name may hold spaces and parentheses
        return fields[0], int(fields[1]), int(fields[3])
    except (OSError, ValueError, IndexError):
        return None


def _live() -> dict[int, tuple[str, int, int]]:
    """Every live (non-zombie) process: pid -> (state, parent pid, session id)."""
    out = {}
    for path in Path("/proc").glob("[0-9]*/stat"):
        stat = _stat(path)
        if stat is not None and stat[0] != "Z":
            out[int(path.parent.name)] = stat
    return out


def session_pids(sid: int) -> list[int]:
    """Live processes of session `sid`: what a command started with start_new_session left running."""
    return [pid for pid, (_, _, session) in _live().items() if session == sid]


def descendants(pid: int | None = None) -> list[int]:
    """Live descendants of `pid` (default: this process), parents before children."""
    root = os.getpid() if pid is None else pid
    children: dict[int, list[int]] = {}
    for child, (_, parent, _) in _live().items():
        children.setdefault(parent, []).append(child)
    found: list[int] = []
    todo = list(children.get(root, []))
    while todo:
        p = todo.pop(0)
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def stop_descendants(grace_s: float = 10.0) -> list[int]:
    """SIGTERM every descendant of this process, SIGKILL those alive after `grace_s`; returns the pids signalled."""
    pids = descendants()
    for p in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    for p in pids + descendants():  # and whatever they started meanwhile
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if _alive(p):
                os.kill(p, signal.SIGKILL)
    return pids


def _alive(pid: int) -> bool:
    stat = _stat(Path(f"/proc/{pid}/stat"))
    return stat is not None and stat[0] != "Z"


@contextlib.contextmanager
def no_orphans(grace_s: float = 10.0) -> Iterator[None]:
    """If the block is left by an exception (an interrupt included), stop the processes it left behind."""
    try:
        yield
    except BaseException:
        stop_descendants(grace_s)
        raise
