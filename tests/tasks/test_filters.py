"""Patch selection per step: overlap, disjoint, split; determinism and cache-key isolation."""

from __future__ import annotations

import numpy as np
import pytest

from cdseg.data.isprs import POTSDAM
from cdseg.errors import ConfigError, DataError
from cdseg.tasks import Task, filters
from cdseg.tasks import get_task as task_of
from cdseg.tasks.filters import cached_select, select, selection_key, split_partition

IMP, BLD, LOW, TREE, CAR, CLU, IGN = range(7)


def get_task(name: str) -> Task:
    return task_of(name, POTSDAM.manifest_fields())


def hist_of(*patches: list[int]) -> np.ndarray:
    """Histograms (7 bins: 6 classes + ignore) of patches given as lists of present classes."""
    out = np.zeros((len(patches), 7), np.int64)
    for i, present in enumerate(patches):
        out[i, present] = 10
    return out


def random_hist(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    hist = (rng.random((n, 7)) < 0.5) * rng.integers(1, 100, (n, 7))
    hist[:, IGN] = np.where(rng.random(n) < 0.3, 50, 0)  # some ignore pixels (the original crashed on them)
    return hist


def test_overlap_keeps_patches_with_a_new_class():
    hist = hist_of([IMP], [BLD, TREE], [TREE], [CAR, IGN], [LOW])
    t = get_task("222a")
    assert select(hist, t, 1, "overlap", 0).tolist() == [1, 2]  # building or tree
    assert select(hist, t, 2, "overlap", 0).tolist() == [3]


def test_disjoint_excludes_future_classes_but_not_ignore_or_old():
    hist = hist_of([IMP, BLD], [BLD, CAR], [BLD, IGN], [TREE, LOW], [CLU])
    t = get_task("222a")
    assert select(hist, t, 1, "disjoint", 0).tolist() == [0, 2, 3]  # car (step 2) is future for patch 1
    assert select(hist, t, 0, "disjoint", 0).tolist() == []  # every patch but 3 has a future class; 3 has tree
    assert select(hist_of([IMP, LOW, IGN]), t, 0, "disjoint", 0).tolist() == [0]


@pytest.mark.parametrize("task", ["6s", "222a", "321", "offline"])
def test_split_partitions_the_patches(task):
    hist = random_hist(400)
    t = get_task(task)
    chosen = [set(select(hist, t, s, "split", 7).tolist()) for s in range(t.num_steps)]
    union = set().union(*chosen)
    assert sum(len(c) for c in chosen) == len(union)  # disjoint: each patch in at most one step
    has_class = set(np.flatnonzero(hist[:, :6].sum(axis=1) > 0).tolist())
    assert union == has_class  # every patch with any class is used by exactly one step (all classes are in steps)
    for s, picked in enumerate(chosen):  # each step's patches contain one of its classes
        new = t.raw_indices(t.new_classes(s))
        assert all(hist[i, new].any() for i in picked)


def test_split_is_balanced_and_ignores_255():
    hist = random_hist(600, seed=3)
    assigned = split_partition(hist, 1337)
    counts = np.bincount(assigned[assigned >= 0], minlength=6)
    assert counts.max() - counts.min() <= 0.2 * counts.mean()
    only_ignore = np.zeros((1, 7), np.int64)
    only_ignore[0, IGN] = 100
    assert split_partition(only_ignore, 0).tolist() == [-1]


def test_split_deterministic_per_seed():
    hist = random_hist(300)
    t = get_task("6s")
    a = select(hist, t, 2, "split", 1337)
    assert np.array_equal(a, select(hist, t, 2, "split", 1337))
    assert not np.array_equal(split_partition(hist, 1337), split_partition(hist, 1338))


def test_cache_key_isolation():
    filters._CACHE.clear()
    t6, t222 = get_task("6s"), get_task("222a")
    hist_a, hist_b = hist_of([BLD], [TREE]), hist_of([TREE], [BLD], [BLD])
    a = cached_select("fp-a", hist_a, t6, 0, "train", "overlap", 0)
    b = cached_select("fp-b", hist_b, t6, 0, "train", "overlap", 0)  # another dataset: recomputed
    assert a.tolist() == [0] and b.tolist() == [1, 2]
    c = cached_select("fp-a", hist_a, t222, 1, "train", "overlap", 0)  # another task: recomputed
    assert c.tolist() == [0, 1]
    keys = {selection_key("fp", t, s, sp, m, seed) for t in (t6, t222) for s in (0, 1) for sp in ("train", "val")
            for m in ("overlap", "split") for seed in (0, 1)}
    assert len(keys) == 2 * 2 * 2 * 2 * 2
    # same name, other steps (a user task) is another key
    from cdseg.tasks.task import Task
    assert selection_key("fp", Task("6s", (("tree",), ("building",)), POTSDAM.classes), 0, "train", "overlap", 0) != \
        selection_key("fp", t6, 0, "train", "overlap", 0)


def test_empty_selection_and_bad_mode():
    with pytest.raises(DataError, match="no train patch contains the classes"):
        cached_select("fp-empty", hist_of([IMP]), get_task("6s"), 4, "train", "overlap", 0)
    with pytest.raises(ConfigError, match="filter-mode 'noov'"):
        select(hist_of([IMP]), get_task("6s"), 0, "noov", 0)
