"""`IncrementalDataset`: patches of a prepared dataset for one (task, step, split), targets remapped."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from cdseg.data.prepared import PreparedDataset
from cdseg.data.split_augment import CropOnWorker
from cdseg.errors import DataError

SPLITS = ("train", "val", "test")


class StepLabels(Protocol):
    """What the dataset needs of a task (`cdseg.tasks.Task` is one); data never imports tasks."""

    def check_step(self, step: int) -> int: ...
    def label_lut(self, step: int, split: str) -> np.ndarray: ...
    def class_names(self, step: int) -> list[str]: ...
    def num_outputs(self, step: int) -> int: ...
    def select_patches(self, fingerprint: str, hist: np.ndarray, step: int, split: str, mode: str,
                       seed: int) -> np.ndarray: ...


class IncrementalDataset(Dataset):
    """Image float32 CxHxW in [0, 1] (not normalised), mask int64 HxW of target indices (255 ignore), metadata.

    With a `CropOnWorker` transform, the uint8 crop and the drawn parameters instead (`cdseg.data.split_augment`).

    Training patches are chosen by `filter_mode`; validation and test use every patch of their
    scenes (the original filtered and re-labelled those per step, so they scored different pixels at
    every step). Targets follow `task.label_lut(step, split)`.
    """

    def __init__(self, prepared: PreparedDataset | str, task: StepLabels, step: int, split: str,
                 filter_mode: str = "overlap", transform: Any = None, seed: int = 1337,
                 bands: list[str] | None = None) -> None:
        self.prepared = prepared if isinstance(prepared, PreparedDataset) else PreparedDataset.open(prepared)
        self.task = task
        self.step = self.task.check_step(step)
        if split not in SPLITS:
            raise DataError(f"split {split!r} is not one of {', '.join(SPLITS)}")
        self.split, self.filter_mode, self.seed, self.transform = split, filter_mode, seed, transform
        have = self.prepared.bands
        self.bands = list(bands) if bands else have
        missing = [b for b in self.bands if b not in have]
        if missing:
            raise DataError(f"band(s) {', '.join(missing)} are not in {self.prepared.uri}, which has "
                            f"{', '.join(have)}; choose --data.bands among them or prepare with other --channels")
        self._band_index = [have.index(b) for b in self.bands]
        self._all_bands = self._band_index == list(range(len(have)))
        records = self.prepared.patches(split)
        if split == "train":
            chosen = self.task.select_patches(self.prepared.fingerprint, self.prepared.histograms(records), step,
                                              split, filter_mode, seed)
            records = [records[i] for i in chosen]
        self.records = records
        self.lut = torch.from_numpy(np.asarray(self.task.label_lut(step, split)).astype(np.int64))

    @property
    def lut(self) -> torch.Tensor:
        """Raw label -> target index (int64, 256 entries); assignable (joint training uses the val table)."""
        return self._lut

    @lut.setter
    def lut(self, table: torch.Tensor) -> None:
        self._lut = table
        # targets stay one byte per pixel through the augmentation (crops, flips: gathers only) and become
        # int64 once, at the end; a table with targets above 255 takes the int64 path all along
        fits = table.numel() > 0 and int(table.min()) >= 0 and int(table.max()) <= 255
        self._lut8 = table.numpy().astype(np.uint8) if fits else None

    @property
    def class_names(self) -> list[str]:
        """Name of each target index (0 = background)."""
        return self.task.class_names(self.step)

    @property
    def stats(self) -> dict[str, dict[str, float]]:
        """Per-band mean/std of the training scenes (of the [0, 1]-scaled bands), for the model's normalisation."""
        return {b: self.prepared.manifest["stats"][b] for b in self.bands if b in self.prepared.manifest["stats"]}

    def class_pixels(self) -> np.ndarray:
        """Pixels per target index over this dataset's patches (from the manifest; before augmentation)."""
        hist = self.prepared.histograms(self.records).sum(axis=0)
        out = np.zeros(self.task.num_outputs(self.step), np.int64)
        lut = self.lut.numpy()
        for raw, count in enumerate(hist[:-1]):
            out[lut[raw]] += count
        return out

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        meta = {"scene": record.scene, "y": record.y, "x": record.x, "index": record.id}
        if isinstance(self.transform, CropOnWorker):  # uint8 crop and drawn parameters; the device does the rest
            size, bands = self.prepared.patch_size, None if self._all_bands else self._band_index

            def read(top: int, left: int, image_out: np.ndarray, label_out: np.ndarray) -> None:
                self.prepared.read_box(record, top, left, image_out, label_out, bands)

            table = self._lut8 if self._lut8 is not None else self.lut
            return {**self.transform((len(self.bands), size, size), read, table), "meta": meta}
        image, label = self.prepared.read_patch(record)
        if not self._all_bands:
            image = image[self._band_index]
        img = tv_tensors.Image(torch.from_numpy(image).to(torch.float32).div_(255.0))
        mask = tv_tensors.Mask(self._targets(torch.from_numpy(label)))
        if self.transform is not None:
            img, mask = self.transform(img, mask)
        return {
            "image": img.as_subclass(torch.Tensor).contiguous(),
            "mask": mask.as_subclass(torch.Tensor).to(torch.int64, memory_format=torch.contiguous_format),
            "meta": meta,
        }

    def _targets(self, label: torch.Tensor) -> torch.Tensor:
        """Raw labels (uint8) -> targets: uint8 through the one-byte table when it fits, else int64."""
        if self._lut8 is not None:
            return torch.from_numpy(self._lut8[label.numpy()])
        return self.lut[label.long()]
