"""The training loader's side of `cdseg bench train --loader`: augmented patches from a prepared dataset.

One probe call reads and augments a batch of random training patches in this process, as one DataLoader
worker process does; `bench train` times it interleaved with the training steps, so the two rates come
from the same rounds of the same (possibly loaded) machine.
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
    """Reads `batch` random augmented training patches (crop `crop` px) per call, in this process."""

    def __init__(self, prepared: str | Path, crop: int, batch: int, seed: int = 0) -> None:
        from cdseg.data.dataset import IncrementalDataset
        from cdseg.data.prepared import PreparedDataset
        from cdseg.data.transforms import train_transform
        from cdseg.tasks import get_task

        data = PreparedDataset.open(str(prepared))
        self.dataset = IncrementalDataset(data, get_task("offline", data.manifest), 0, "train",
                                          transform=train_transform(crop))
        if len(self.dataset) == 0:
            raise ValueError(f"the prepared dataset {prepared} has no training patches")
        self.batch = batch
        self.generator = torch.Generator().manual_seed(seed)
        self.patches = 0

    def __call__(self, r: int = 0) -> list[dict[str, Any]]:
        """One batch of samples (image, mask, ...) as a DataLoader worker would produce it."""
        idx = torch.randint(0, len(self.dataset), (self.batch,), generator=self.generator)
        out = [self.dataset[int(i)] for i in idx]
        self.patches += len(out)
        return out
