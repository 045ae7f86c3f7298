"""Data order and augmentation are functions of (seed, epoch, index): rank count and resume do not change them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from cdseg.errors import DataError
from cdseg.train.data import GlobalBatchSampler, SeededItems, mix_seed


class _Noise(Dataset):
    def __len__(self) -> int:
        return 10

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": torch.rand(1) + 10 * i + np.random.rand(), "mask": torch.zeros(1)}


def test_two_ranks_split_the_same_global_batches() -> None:
    one = GlobalBatchSampler(10, 4, 0, 1, seed=3)
    r0, r1 = GlobalBatchSampler(10, 2, 0, 2, seed=3), GlobalBatchSampler(10, 2, 1, 2, seed=3)
    for epoch in (0, 1):
        for s in (one, r0, r1):
            s.set_epoch(epoch)
        for full, a, b in zip(one, r0, r1, strict=True):
            assert full == a + b
    assert len(one) == 2  # drop_last: 10 // 4


def test_epochs_differ_and_resume_skips_exactly() -> None:
    s = GlobalBatchSampler(10, 2, 0, 1, seed=0)
    s.set_epoch(0)
    e0 = list(s)
    s.set_epoch(1)
    assert [i % 10 for b in list(s) for i in b] != [i % 10 for b in e0 for i in b]
    s.set_epoch(0, start_iter=3)
    assert list(s) == e0[3:] and len(s) == 2


def test_too_small_for_one_global_batch() -> None:
    with pytest.raises(DataError, match="fewer than one global batch"):
        GlobalBatchSampler(3, 2, 0, 2, seed=0)


def test_items_are_seeded_per_epoch_and_index_and_leave_the_caller_rng_alone() -> None:
    ds = SeededItems(_Noise(), seed=1)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    a = ds[3]["image"]
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(ds[3]["image"], a)
    assert not torch.equal(ds[10 + 3]["image"], a)  # epoch 1, same index
    assert mix_seed(1, 2) != mix_seed(2, 1)



class _Draws(Dataset):
    def __len__(self) -> int:
        return 10

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.rand(3)


def test_items_seed_the_cpu_generator_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same draws as torch.manual_seed(mix_seed(seed, epoch, index)), without its per-call CUDA seed queueing
    (a stack trace per call in a worker process, as long as the worker's whole share of the split augmentation)."""
    ds = SeededItems(_Draws(), seed=5)
    torch.manual_seed(mix_seed(5, 1, 3))
    want = torch.rand(3)
    monkeypatch.setattr(torch, "manual_seed", lambda *a: pytest.fail("torch.manual_seed called per item"))
    assert torch.equal(ds[10 + 3], want)  # epoch 1, index 3


def test_numpy_and_python_states_are_restored_in_the_main_process_only() -> None:
    np.random.seed(0)
    before = np.random.get_state()[1].copy()
    SeededItems(_Noise(), seed=1)[4]  # the main process (workers=0): the caller's stream goes on untouched
    assert np.array_equal(np.random.get_state()[1], before)
    SeededItems(_Noise(), seed=1, restore_rng=False)[4]  # as in a worker process: left seeded by the item
    assert not np.array_equal(np.random.get_state()[1], before)
