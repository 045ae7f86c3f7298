"""The augmentation split between the loader worker and the device gives the loader path's patches, draw for draw."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cdseg.data.dataset import IncrementalDataset
from cdseg.data.split_augment import WORKER_KEYS, AugmentOnDevice, AugmentSpec, CropOnWorker
from cdseg.data.transforms import train_transform
from cdseg.tasks import get_task
from cdseg.train.data import SeededItems, _collate

SPECS = [AugmentSpec(48), AugmentSpec(48, scale=(0.5, 1.0), flip=False, rotate90=True, brightness=0.0, contrast=0.3),
         AugmentSpec(160, flip=True, rotate90=False, brightness=0.0, contrast=0.0)]


def _pair(prepared_dataset: Path, task_name: str, spec: AugmentSpec) -> tuple[IncrementalDataset, IncrementalDataset]:
    from cdseg.data.prepared import PreparedDataset

    data = PreparedDataset.open(str(prepared_dataset))
    step = 1 if task_name == "222a" else 0  # step 1 of 222a: a many-to-one table (old classes -> background)
    task = get_task(task_name, data.manifest)
    loader = IncrementalDataset(data, task, step, "train", transform=train_transform(
        spec.size, spec.scale, spec.flip, spec.rotate90, spec.brightness, spec.contrast))
    worker = IncrementalDataset(data, task, step, "train", transform=CropOnWorker(spec))
    return loader, worker


@pytest.mark.parametrize("spec", SPECS, ids=["default", "turns-contrast", "upscale-flips"])
@pytest.mark.parametrize("task_name", ["offline", "222a"])
def test_device_part_on_cpu_equals_the_loader_path(prepared_dataset: Path, task_name: str, spec: AugmentSpec) -> None:
    loader, worker = _pair(prepared_dataset, task_name, spec)
    a, b = SeededItems(loader, 7), SeededItems(worker, 7)
    device = AugmentOnDevice(spec)
    keys = list(range(0, 3 * len(loader), 3))[:24]  # many seeds: (7, epoch, index) for 24 keys
    for start in range(0, len(keys), 8):
        chunk = keys[start:start + 8]
        want = _collate([a[k] for k in chunk])
        items = [b[k] for k in chunk]
        x, y = device(_collate(items), "cpu")
        # the same ops in the same memory order as the loader path: equal bit for bit, not only close
        assert torch.equal(x, want["image"]) and torch.equal(y, want["mask"]), chunk
        assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.is_contiguous()


def test_worker_part_does_no_float_work_and_draws_like_the_loader_path(prepared_dataset: Path) -> None:
    loader, worker = _pair(prepared_dataset, "222a", AugmentSpec(48))
    for seed in range(6):
        torch.manual_seed(seed)
        item = worker[seed % len(worker)]
        after_worker = torch.rand(())
        torch.manual_seed(seed)
        loader[seed % len(loader)]
        # the same number and order of torch draws: the generator stands at the same place afterwards
        assert torch.equal(after_worker, torch.rand(()))
        assert item["image"].dtype == torch.uint8 and item["mask"].dtype == torch.uint8
        assert item["image"].shape[-2:] == item["mask"].shape == (128, 128)  # the patch, whatever the crop
        h, w = item["crop"].tolist()
        assert h == w and 12 <= h <= 128
        # the crop packed at the start of the buffers, zeros after it
        assert not item["image"].view(-1)[4 * h * w:].any() and not item["mask"].view(-1)[h * w:].any()
    assert set(WORKER_KEYS) <= set(item)


def test_a_table_above_one_byte_keeps_int64_targets(prepared_dataset: Path) -> None:
    loader, worker = _pair(prepared_dataset, "offline", AugmentSpec(48))
    big = torch.arange(256, dtype=torch.int64) + 1000  # targets above 255 (a user's table): the int64 path
    loader.lut, worker.lut = big, big
    torch.manual_seed(3)
    want = loader[0]
    torch.manual_seed(3)
    item = worker[0]
    assert item["mask"].dtype == torch.int64
    x, y = AugmentOnDevice(AugmentSpec(48))(_collate([item]), "cpu")
    assert torch.equal(x[0], want["image"]) and torch.equal(y[0], want["mask"])


def test_a_band_subset_is_read_straight_from_the_file(prepared_dataset: Path) -> None:
    from cdseg.data.prepared import PreparedDataset

    data = PreparedDataset.open(str(prepared_dataset))
    task = get_task("offline", data.manifest)
    bands = ["IR", "G"]  # a subset, out of order
    loader = IncrementalDataset(data, task, 0, "train", transform=train_transform(48), bands=bands)
    worker = IncrementalDataset(data, task, 0, "train", transform=CropOnWorker(AugmentSpec(48)), bands=bands)
    keys = list(range(8))
    want = _collate([SeededItems(loader, 1)[k] for k in keys])
    items = [SeededItems(worker, 1)[k] for k in keys]
    assert items[0]["image"].shape == (2, 128, 128)
    x, y = AugmentOnDevice(AugmentSpec(48))(_collate(items), "cpu")
    assert torch.equal(x, want["image"]) and torch.equal(y, want["mask"])


@pytest.mark.parametrize("shape", [(5, 7), (6, 4), (1, 1)])
def test_the_two_byte_class_table_maps_like_the_table(shape: tuple[int, int]) -> None:
    table = torch.randint(0, 256, (256,), generator=torch.Generator().manual_seed(1)).numpy().astype("uint8")
    raw = torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(2)).numpy().astype("uint8")
    out = torch.zeros(shape, dtype=torch.uint8).numpy()
    CropOnWorker(AugmentSpec(16))._map8(table, raw, out)  # odd and even pixel counts
    assert (out == table[raw]).all()
