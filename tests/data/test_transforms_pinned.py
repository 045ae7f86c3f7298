"""The training augmentation yields the same patches as the straightforward pipeline it replaced (fixed seed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from cdseg.data.dataset import IncrementalDataset
from cdseg.data.transforms import RandomFlipRotate90, RandomRotate90, train_transform
from cdseg.tasks import get_task


class _Jitter(v2.Transform):
    """The brightness/contrast jitter as first written (a new tensor per operation)."""

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        apply = bool(torch.rand(()) < 0.5)
        b = 1.0 + (torch.rand(()).item() * 2 - 1) * 0.2
        c = 1.0 + (torch.rand(()).item() * 2 - 1) * 0.2
        return {"apply": apply, "b": b, "c": c}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not params["apply"] or not isinstance(inpt, tv_tensors.Image):
            return inpt
        x = inpt.as_subclass(torch.Tensor)
        mean = x.mean(dim=(-2, -1), keepdim=True)
        return tv_tensors.wrap((((x - mean) * params["c"] + mean) * params["b"]).clamp_(0.0, 1.0), like=inpt)


def _reference(size: int) -> v2.Compose:
    """The pipeline before issue 18: three separate flips/turn transforms, each copying the image."""
    return v2.Compose([v2.RandomResizedCrop(size, scale=(0.25, 1.0), ratio=(1.0, 1.0), antialias=True),
                       v2.RandomHorizontalFlip(), v2.RandomVerticalFlip(), RandomRotate90(), _Jitter()])


def _reference_item(ds: IncrementalDataset, index: int, transform: v2.Compose) -> dict[str, torch.Tensor]:
    """`IncrementalDataset.__getitem__` before issue 18: float image, int64 targets before the augmentation."""
    image, label = ds.prepared.read_patch(ds.records[index])
    img = tv_tensors.Image(torch.from_numpy(image).to(torch.float32).div_(255.0))
    mask = tv_tensors.Mask(ds.lut[torch.from_numpy(label).long()])
    img, mask = transform(img, mask)
    return {"image": img.as_subclass(torch.Tensor).contiguous(), "mask": mask.as_subclass(torch.Tensor).contiguous()}


@pytest.mark.parametrize(("task_name", "val_table"), [("offline", False), ("222a", False), ("222a", True)])
def test_augmented_patches_are_identical_to_the_straightforward_pipeline(prepared_dataset: Path, task_name: str,
                                                                         val_table: bool) -> None:
    from cdseg.data.prepared import PreparedDataset

    data = PreparedDataset.open(str(prepared_dataset))
    step = 1 if task_name == "222a" else 0  # step 1 of 222a: old classes become background, a many-to-one table
    task = get_task(task_name, data.manifest)
    new = IncrementalDataset(data, task, step, "train", transform=train_transform(48))
    if val_table:  # joint training assigns the validation table (old and new classes) to its train set
        new.lut = torch.from_numpy(task.label_lut(step, "val").astype("int64"))
    reference = _reference(48)
    for seed in range(24):
        i = seed % len(new)
        torch.manual_seed(seed)
        a = new[i]
        torch.manual_seed(seed)
        b = _reference_item(new, i, reference)
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"]), seed
        assert a["image"].is_contiguous() and a["mask"].dtype == torch.int64


@pytest.mark.parametrize(("h", "v", "k"), [(h, v, k) for h in (False, True) for v in (False, True) for k in range(4)])
def test_one_transpose_and_one_flip_equal_flips_then_quarter_turns(h: bool, v: bool, k: int) -> None:
    img = tv_tensors.Image(torch.rand(2, 5, 7))
    mask = tv_tensors.Mask(torch.randint(0, 9, (5, 7)))
    t = RandomFlipRotate90()
    draws = iter([torch.tensor([0.0 if h else 0.9]), torch.tensor([0.0 if v else 0.9])])
    orig_rand, orig_randint = torch.rand, torch.randint
    try:
        torch.rand = lambda *a, **kw: next(draws)  # type: ignore[assignment]
        torch.randint = lambda *a, **kw: torch.tensor(k)  # type: ignore[assignment]
        params = t.make_params([img, mask])
    finally:
        torch.rand, torch.randint = orig_rand, orig_randint
    for x in (img, mask):
        want = x.as_subclass(torch.Tensor)
        want = want.flip(-1) if h else want
        want = torch.rot90(want.flip(-2) if v else want, k, dims=(-2, -1))
        got = t.transform(x, params)
        assert torch.equal(got.as_subclass(torch.Tensor), want) and type(got) is type(x)
