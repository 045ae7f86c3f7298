"""SIGTERM as an exception, so that a terminated command cleans up like an interrupted one.

Python's default SIGTERM action ends the process at once: no `finally`, no removal of staging folders,
no stopping of worker processes. Within `terminate_as_exception()` a SIGTERM raises `Terminated` (a
`KeyboardInterrupt`) in the main thread instead; the CLI reports it in one line and exits 143.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM."""


def _raise(signum: int, frame: FrameType | None) -> None:
    raise Terminated(f"terminated by {signal.Signals(signum).name}")


@contextlib.contextmanager
def terminate_as_exception() -> Iterator[None]:
    """Within the block, SIGTERM raises `Terminated` (only from the main thread; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def ignore_interrupts() -> None:
    """For worker processes: Ctrl-C reaches the whole process group, but only the parent should handle it
    (it stops the workers); a worker would otherwise print its own traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM are held back and take effect when it ends: for a short critical
    section such as starting worker processes, which an interrupt must not cut in half (a worker forked but not
    yet registered would outlive the clean-up and fail on its removed semaphores).

    SIGINT is blocked with the signal mask, which processes started in the block inherit: a Ctrl-C, which
    reaches the whole process group, then never interrupts a starting interpreter (the forkserver, the
    workers) half-way through its imports; this process gets it when the block ends. SIGTERM is held by a
    handler instead (a mask would also shield the workers from the SIGTERM that stops them).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        held.append(signum)

    # the mask is per thread, and a signal goes to any thread not blocking it: the handler holds what
    # reaches this process through another thread
    previous = {sig: signal.signal(sig, hold) for sig in (signal.SIGTERM, signal.SIGINT)}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a Ctrl-C blocked meanwhile reaches `hold` now
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    for signum in held[:1]:
        handler = previous[signal.Signals(signum)]
        if callable(handler):
            handler(signum, None)  # the surrounding handler: KeyboardInterrupt, or terminate_as_exception's
        elif handler != signal.SIG_IGN:
            raise KeyboardInterrupt if signum == signal.SIGINT else Terminated("terminated by SIGTERM")
