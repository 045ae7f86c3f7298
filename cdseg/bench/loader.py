"""The training loader's side of `cdseg bench train --loader`: augmented patches from a prepared dataset.

One probe call reads, augments and collates a batch of random training patches in this process, as one DataLoader
worker process does (with the augmentation on the device: draws and uint8 crops only; `DevicePartProbe` times the
rest on the device); `bench train` times them interleaved with the training steps, so the rates come from the
same rounds of the same (possibly loaded) machine.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)


def make_prepared(work: Path, scene_size: int, patch_size: int) -> Path:
    """Generate one RGBIR training scene and prepare it under `work`; returns the prepared folder."""
    from cdseg.data.config import PrepareConfig, SynthConfig
    from cdseg.data.prepare import run_prepare
    from cdseg.data.synth_release import run_synth

    release, out = work / "release", work / "prepared"
    run_synth(SynthConfig(output=str(release), size=scene_size, train_scenes=1, test_scenes=0,
                          products=["RGBIR", "labels"], workers=1))
    run_prepare(PrepareConfig(input=str(release), output=str(out), patch_size=patch_size, workers=1, val_count=0))
    return out


class LoaderProbe:
    """Reads `batch` random augmented training patches (crop `crop` px) per call, in this process.

    `augment_on="device"`: only the worker part of the split augmentation (random draws, uint8 crop), as a worker
    serves it with --data.augment-on device; `DevicePartProbe` then times the rest on the device."""

    def __init__(self, prepared: str | Path, crop: int, batch: int, seed: int = 0, augment_on: str = "loader") -> None:
        from cdseg.data.dataset import IncrementalDataset
        from cdseg.data.prepared import PreparedDataset
        from cdseg.data.split_augment import AugmentSpec, CropOnWorker
        from cdseg.data.transforms import train_transform
        from cdseg.tasks import get_task
        from cdseg.train.data import SeededItems

        data = PreparedDataset.open(str(prepared))
        transform = CropOnWorker(AugmentSpec(crop)) if augment_on == "device" else train_transform(crop)
        self.dataset = IncrementalDataset(data, get_task("offline", data.manifest), 0, "train", transform=transform)
        if len(self.dataset) == 0:
            raise ValueError(f"the prepared dataset {prepared} has no training patches")
        # per-sample seeding as in a training loader's worker process (where numpy's and Python's RNG states
        # are not restored after each item)
        self.items = SeededItems(self.dataset, seed, restore_rng=False)
        self.batch = batch
        self.generator = torch.Generator().manual_seed(seed)
        self.patches = 0
        self.last: dict[str, Any] = {}

    def __call__(self, r: int = 0) -> dict[str, Any]:
        """One collated batch (image, mask, ...) as a DataLoader worker produces it (the collate runs there too)."""
        from cdseg.train.data import _collate

        idx = torch.randint(0, len(self.dataset), (self.batch,), generator=self.generator)
        self.last = _collate([self.items[int(i)] for i in idx])
        self.patches += len(idx)
        return self.last


class DevicePartProbe:
    """Finishes the batch a device-mode `LoaderProbe` produced last (collated) on `device`: the device part."""

    def __init__(self, worker: LoaderProbe, crop: int, device: torch.device) -> None:
        from cdseg.data.split_augment import AugmentOnDevice, AugmentSpec

        self.worker, self.device, self.augment = worker, device, AugmentOnDevice(AugmentSpec(crop))

    def __call__(self, r: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """The copy of the uint8 batch to the device, resize, flips and turns, jitter, int64 targets."""
        if not self.worker.last:
            self.worker()
        return self.augment(self.worker.last, self.device)
