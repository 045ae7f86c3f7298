"""`IncrementalDataset` and the transforms: contract (dtypes, ranges, targets), selection, augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from cdseg.data.dataset import IncrementalDataset
from cdseg.data.isprs import POTSDAM
from cdseg.data.prepared import PreparedDataset
from cdseg.data.transforms import RandomRotate90, eval_transform, train_transform
from cdseg.tasks import Task
from cdseg.tasks import get_task as task_of


def get_task(name: str) -> Task:
    return task_of(name, POTSDAM.manifest_fields())


def make(prepared: PreparedDataset | str | Path, task: str, *args, **kwargs) -> IncrementalDataset:
    """The dataset of a task named in the prepared dataset's manifest (as the trainer builds it)."""
    data = prepared if isinstance(prepared, PreparedDataset) else PreparedDataset.open(str(prepared))
    return IncrementalDataset(data, task_of(task, data.manifest), *args, **kwargs)


def test_contract(prepared_dataset):
    ds = make(str(prepared_dataset), "222a", 1, "train", "overlap")
    item = ds[0]
    img, mask = item["image"], item["mask"]
    assert img.dtype == torch.float32 and img.shape == (4, 128, 128) and img.min() >= 0.0 and img.max() <= 1.0
    assert mask.dtype == torch.int64 and mask.shape == (128, 128)
    assert set(mask.unique().tolist()) <= {0, 3, 4}  # training: only building (3) and tree (4) are foreground
    assert set(item["meta"]) == {"scene", "y", "x", "index"}
    assert item["meta"]["scene"] in PreparedDataset.open(prepared_dataset).scenes("train")
    assert ds.class_names == get_task("222a").class_names(1)
    assert set(ds.stats) == {"R", "G", "B", "IR"}


def test_targets_follow_the_lut(prepared_dataset):
    prepared = PreparedDataset.open(prepared_dataset)
    for split in ("train", "val", "test"):
        ds = make(prepared, "321", 1, split)
        item = ds[len(ds) - 1]
        rec = ds.records[len(ds) - 1]
        _, raw = prepared.read_patch(rec)
        expected = get_task("321").label_lut(1, split)[raw]
        np.testing.assert_array_equal(item["mask"].numpy(), expected)


def test_val_and_test_use_every_patch_and_score_old_classes(prepared_dataset):
    prepared = PreparedDataset.open(prepared_dataset)
    val = make(prepared, "6s", 2, "val")
    test = make(prepared, "6s", 2, "test")
    assert len(val) == len(prepared.patches("val")) and len(test) == len(prepared.patches("test"))
    pixels = val.class_pixels()
    assert pixels.shape == (4,) and (pixels[1:] > 0).all()  # building, tree (old) and impervious (new) all scored


def test_train_selection_modes(prepared_dataset):
    prepared = PreparedDataset.open(prepared_dataset)
    n = len(prepared.patches("train"))
    overlap = make(prepared, "222a", 2, "train", "overlap")
    split = [make(prepared, "222a", s, "train", "split", seed=1) for s in range(3)]
    assert len(overlap) <= n
    idx = [{r.id for r in d.records} for d in split]
    assert not (idx[0] & idx[1]) and not (idx[1] & idx[2]) and sum(map(len, idx)) == n
    again = make(prepared, "222a", 1, "train", "split", seed=1)
    assert [r.id for r in again.records] == [r.id for r in split[1].records]


def test_band_subset(prepared_dataset):
    ds = make(prepared_dataset, "offline", 0, "test", bands=["IR", "R"])
    full = make(prepared_dataset, "offline", 0, "test")
    assert ds.bands == ["IR", "R"]
    torch.testing.assert_close(ds[0]["image"], full[0]["image"][[3, 0]])


def test_train_transform_keeps_image_and_mask_aligned():
    torch.manual_seed(0)
    # a mask that equals the first image band exactly: any misalignment or interpolation of the mask shows
    values = torch.randint(0, 6, (64, 64))
    img = tv_tensors.Image(torch.stack([values.float() / 5, torch.rand(64, 64), torch.rand(64, 64)]))
    mask = tv_tensors.Mask(values)
    t = train_transform(32, scale=(0.25, 1.0), brightness=0.0, contrast=0.0)
    for _ in range(10):
        out_img, out_mask = t(img, mask)
        assert out_img.shape == (3, 32, 32) and out_mask.shape == (32, 32)
        assert set(out_mask.unique().tolist()) <= set(range(6))  # nearest: no new label values
        assert out_mask.dtype == torch.int64


def test_rotate90_is_exact():
    x = tv_tensors.Image(torch.arange(16.0).reshape(1, 4, 4))
    m = tv_tensors.Mask(torch.arange(16).reshape(4, 4))
    rot = RandomRotate90()
    for k in range(4):
        img, mask = rot.transform(x, {"k": k}), rot.transform(m, {"k": k})
        assert torch.equal(img[0].long(), mask)
        assert isinstance(mask, tv_tensors.Mask)


def test_augmented_loader_batches(prepared_dataset):
    ds = make(prepared_dataset, "offline", 0, "train", transform=train_transform(64))
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4, num_workers=0)))
    assert batch["image"].shape == (4, 4, 64, 64) and batch["mask"].shape == (4, 64, 64)
    assert eval_transform()(ds[0]["image"]).shape == (4, 64, 64)


def test_bad_split(prepared_dataset):
    with pytest.raises(Exception, match="split 'training' is not one of train, val, test"):
        make(prepared_dataset, "offline", 0, "training")


def test_reading_bounds_the_gdal_block_cache(prepared_dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rasterio.env import get_gdal_config, set_gdal_config

    import cdseg.data.prepared as prepared

    before = get_gdal_config("GDAL_CACHEMAX")
    try:
        for user_value in (None, "1024"):
            if user_value is None:
                monkeypatch.delenv("GDAL_CACHEMAX", raising=False)
            else:
                monkeypatch.setenv("GDAL_CACHEMAX", user_value)
            monkeypatch.setattr(prepared, "_cache_bounded_in", None)  # as in a fresh process
            set_gdal_config("GDAL_CACHEMAX", 1 << 30)  # GDAL's default: 5% of RAM, per process
            ds = prepared.PreparedDataset.open(prepared_dataset)
            ds.read_patch(ds.patches("train")[0])
            ds.close()
            want = prepared.READ_CACHE_BYTES if user_value is None else 1 << 30  # the user's setting wins
            assert get_gdal_config("GDAL_CACHEMAX") == want
    finally:
        set_gdal_config("GDAL_CACHEMAX", before)
