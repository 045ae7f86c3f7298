"""Which patches a step trains on: `overlap`, `disjoint` (MiB) and `split` (the original's partition).

Selections are computed from the manifest's per-patch class histograms (cheap) and cached in memory,
keyed by (dataset fingerprint, task definition, step, split, mode, seed), so a different dataset or
task never reuses a selection (the original's cache files ignored all of these).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from cdseg.errors import ConfigError, DataError
from cdseg.tasks.task import Task

FilterMode = Literal["overlap", "disjoint", "split"]
FILTER_MODES: tuple[str, ...] = ("overlap", "disjoint", "split")
_CACHE: dict[tuple, np.ndarray] = {}
_CACHE_MAX = 256


def split_partition(hist: np.ndarray, seed: int, classes: list[int] | None = None) -> np.ndarray:
    """Assign each patch to one raw class: visit patches in a seeded random order, give each to the class
    it contains (ignore excluded; only `classes`, default every column but the last) with the fewest
    patches so far, ties to the lowest index. -1 = no class."""
    n = hist.shape[0]
    order = np.random.default_rng(seed).permutation(n)
    present = hist[:, :-1] > 0
    if classes is not None:  # a real background class takes no part in the partition (as in the original)
        present = present & np.isin(np.arange(present.shape[1]), classes)
    counts = np.zeros(present.shape[1], np.int64)
    assigned = np.full(n, -1, np.int64)
    for i in order:
        labels = np.flatnonzero(present[i])
        if labels.size:
            pick = labels[np.argmin(counts[labels])]
            assigned[i] = pick
            counts[pick] += 1
    return assigned


def select(hist: np.ndarray, task: Task, step: int, mode: str, seed: int) -> np.ndarray:
    """Indices (into `hist`'s rows) of the patches step `step` trains on."""
    if mode not in FILTER_MODES:
        raise ConfigError(f"--task.filter-mode {mode!r} is not one of {', '.join(FILTER_MODES)}")
    new = task.raw_indices(task.new_classes(step))
    if hist.shape[1] != len(task.classes) + 1:
        raise DataError(f"patch histograms have {hist.shape[1]} columns, task {task.name!r} has "
                        f"{len(task.classes)} classes (+ ignore); use a dataset prepared with these classes")
    present = hist[:, :-1] > 0
    if mode == "split":
        assigned = split_partition(hist, seed, task.learnable_indices())
        return np.flatnonzero(np.isin(assigned, new))
    has_new = present[:, new].any(axis=1)
    if mode == "overlap":
        return np.flatnonzero(has_new)
    future = task.raw_indices(task.future_classes(step))
    return np.flatnonzero(has_new & ~present[:, future].any(axis=1))


def selection_key(fingerprint: str, task: Task, step: int, split: str, mode: str, seed: int) -> tuple:
    """The cache key of a selection: everything it depends on."""
    return (fingerprint, task.key(), step, split, mode, seed)


def cached_select(fingerprint: str, hist: np.ndarray, task: Task, step: int, split: str, mode: str,
                  seed: int) -> np.ndarray:
    """`select`, memoised by `selection_key`; raises if nothing survives."""
    task.check_step(step)
    key = selection_key(fingerprint, task, step, split, mode, seed)
    if key not in _CACHE:
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = select(hist, task, step, mode, seed)
        _CACHE[key].setflags(write=False)
    chosen = _CACHE[key]
    if chosen.size == 0:
        raise DataError(f"no {split} patch contains the classes of task {task.name!r} step {step} "
                        f"({', '.join(task.new_classes(step))}) with filter mode {mode!r}; use more scenes or "
                        "another filter mode")
    return chosen
