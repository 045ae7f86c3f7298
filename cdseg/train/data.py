"""Training and validation loaders whose content is a function of (seed, epoch, index) only.

The global batch of iteration i of epoch e is a fixed slice of a permutation drawn from (seed, e);
rank r takes its part of that slice. Every sample's augmentation is drawn from a generator seeded by
(seed, e, index), whatever the worker, the rank or the resume point. Hence one process with batch 2B
sees the same global batches as two processes with batch B, and a run resumed mid-epoch (by skipping
the iterations already done) sees exactly what the uninterrupted run saw.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

if TYPE_CHECKING:
    from cdseg.train.config import TrainConfig

from cdseg.errors import ConfigError, DataError


def mix_seed(*parts: int) -> int:
    """A 63-bit seed mixing integers (splitmix64-style), stable across processes and runs."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


class SeededItems(Dataset):
    """Wraps a dataset; key `epoch * len + index` returns `base[index]` drawn under seed (seed, epoch, index).

    The caller's RNG states are saved and restored, so loading in the main process (workers=0)
    does not disturb the trainer's random stream. In a DataLoader worker process nobody else draws from
    them, so numpy's and Python's states are not saved there (about 0.1 ms per item; `restore_rng` forces
    either way); torch's CPU state always is.
    """

    def __init__(self, base: Dataset, seed: int, restore_rng: bool | None = None) -> None:
        self.base = base
        self.seed = seed
        self.n = len(base)  # type: ignore[arg-type]
        self.restore_rng = restore_rng

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key: int) -> Any:
        epoch, index = divmod(int(key), self.n)
        s = mix_seed(self.seed, epoch, index)
        restore = self.restore_rng if self.restore_rng is not None else get_worker_info() is None
        saved = (np.random.get_state(), random.getstate()) if restore else None
        with torch.random.fork_rng(devices=[]):
            # the CPU generator only (what the augmentation draws from): torch.manual_seed would also queue a seed
            # for CUDA, which in a worker process (CUDA never initialised) records a stack trace every call,
            # about half a millisecond: as long as the whole worker part of the split augmentation
            torch.default_generator.manual_seed(s)
            np.random.seed(s % 2**32)
            random.seed(s)
            try:
                return self.base[index]
            finally:
                if saved is not None:
                    np.random.set_state(saved[0])
                    random.setstate(saved[1])


class GlobalBatchSampler(Sampler[list[int]]):
    """Per-rank batches of a seeded global permutation; `set_epoch(e, start_iter)` positions it."""

    def __init__(self, n: int, batch_size: int, rank: int, world_size: int, seed: int, limit: int = 0) -> None:
        self.n, self.batch_size, self.rank, self.world_size, self.seed = n, batch_size, rank, world_size, seed
        self.epoch, self.start_iter = 0, 0
        global_batch = batch_size * world_size
        self.iters = n // global_batch  # drop_last, as the original
        if limit:
            self.iters = min(self.iters, limit)
        if self.iters == 0:
            raise DataError(f"the training set has {n} images, fewer than one global batch of {global_batch} "
                            f"(--trainer.batch-size {batch_size} x {world_size} processes); lower the batch size")

    def set_epoch(self, epoch: int, start_iter: int = 0) -> None:
        """Use epoch `epoch`'s order, starting at iteration `start_iter` (resume)."""
        self.epoch, self.start_iter = epoch, start_iter

    def __len__(self) -> int:
        return self.iters - self.start_iter

    def __iter__(self) -> Iterator[list[int]]:
        g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, 0x5A3))
        perm = torch.randperm(self.n, generator=g).tolist()
        gb = self.batch_size * self.world_size
        for it in range(self.start_iter, self.iters):
            chunk = perm[it * gb:(it + 1) * gb]
            mine = chunk[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]
            yield [self.epoch * self.n + i for i in mine]


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    from cdseg.data.split_augment import WORKER_KEYS

    if "crop" in items[0]:  # the worker part of the split augmentation: uint8 crops and drawn parameters
        return {k: torch.stack([it[k] for it in items]) for k in WORKER_KEYS}
    return {"image": torch.stack([it["image"] for it in items]),
            "mask": torch.stack([torch.as_tensor(it["mask"]).long() for it in items])}


def augment_on_device(choice: str, device: torch.device) -> bool:
    """Whether `--data.augment-on` puts the per-pixel augmentation on the training device (auto: on CUDA)."""
    return choice == "device" or (choice == "auto" and device.type == "cuda")


def batch_to_device(batch: dict[str, Any], device: torch.device, augment: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, targets) of a training batch on `device`; a batch of the split augmentation's worker part is finished
    there by `augment` (a `cdseg.data.split_augment.AugmentOnDevice`)."""
    if "crop" in batch:
        if augment is None:
            raise ValueError("a batch of uint8 crops needs the device part of the augmentation (AugmentOnDevice)")
        return augment(batch, device)
    return batch["image"].to(device, non_blocking=True), batch["mask"].to(device, non_blocking=True)


class OnDevice:
    """Batches of a training loader as dicts of images and targets on `device` (the split augmentation finished)."""

    def __init__(self, loader: Any, device: torch.device, augment: Any) -> None:
        self.loader, self.device, self.augment = loader, device, augment

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for batch in self.loader:
            x, y = batch_to_device(batch, self.device, self.augment)
            yield {"image": x, "mask": y}


def train_loader(dataset: Dataset, sampler: GlobalBatchSampler, seed: int, workers: int,
                 pin_memory: bool) -> DataLoader:
    """A loader over `SeededItems(dataset)` driven by `sampler` (whose epoch the trainer sets)."""
    return DataLoader(SeededItems(dataset, seed), batch_sampler=sampler, num_workers=workers,
                      collate_fn=_collate, pin_memory=pin_memory, persistent_workers=False,
                      prefetch_factor=4 if workers else None)


def val_loader(dataset: Dataset, batch_size: int, rank: int, world_size: int, workers: int,
               pin_memory: bool) -> DataLoader:
    """Rank r scores images r, r+W, ...: no padding, so no image is counted twice."""
    n = len(dataset)  # type: ignore[arg-type]
    own = list(range(rank, n, world_size))
    batches = [own[i:i + batch_size] for i in range(0, len(own), batch_size)]
    return DataLoader(SeededItems(dataset, 0), batch_sampler=batches, num_workers=workers, collate_fn=_collate,
                      pin_memory=pin_memory)


def select_bands(cfg: TrainConfig, have: list[str]) -> list[str]:
    """The bands fed to the model: --data.bands, else the first --in-channels bands of the dataset."""
    if cfg.data.bands:
        if cfg.in_channels is not None and cfg.in_channels != len(cfg.data.bands) and "in_channels" in cfg.model_fields_set:
            raise ConfigError(f"--in-channels {cfg.in_channels} disagrees with --data.bands {','.join(cfg.data.bands)} "
                              f"({len(cfg.data.bands)} bands); give one of them")
        return list(cfg.data.bands)
    if cfg.in_channels is None:
        return list(have)
    if cfg.in_channels > len(have):
        raise DataError(f"--in-channels {cfg.in_channels} but the prepared dataset {cfg.data.dataset} has only "
                        f"{len(have)} bands ({','.join(have)}); use --in-channels {len(have)} or prepare more channels")
    return list(have[:cfg.in_channels])


def build_datasets(cfg: TrainConfig, task: Any, prepared: Any, bands: list[str],
                   on_device: bool = False) -> tuple[Any, Any]:
    """The step's training and validation datasets (joint: every patch, every seen class labelled).

    `on_device`: the training set serves the split augmentation's worker part (uint8 crops and drawn parameters),
    which `AugmentOnDevice` finishes on the training device."""
    from cdseg.data.dataset import IncrementalDataset
    from cdseg.data.split_augment import AugmentSpec, CropOnWorker
    from cdseg.data.transforms import from_data_config

    step = cfg.task.step
    transform = CropOnWorker(AugmentSpec.from_data_config(cfg.data)) if on_device else from_data_config(cfg.data)
    train = IncrementalDataset(prepared, task, step, "train", cfg.task.filter_mode, transform,
                               seed=cfg.task.seed, bands=bands)
    from cdseg.train.methods import recipe

    if recipe(cfg.method).labels == "all_seen":
        # Joint training: every training patch, every class seen up to the step fully labelled (the val LUT).
        train.records = prepared.patches("train")
        train.lut = torch.from_numpy(task.label_lut(step, "val").astype("int64"))
    val = IncrementalDataset(prepared, task, step, "val", bands=bands)
    if len(val) == 0:
        raise DataError(f"the prepared dataset {cfg.data.dataset} has no validation patches; prepare it with a "
                        "validation split (cdseg prepare --val-count N)")
    return train, val
