"""`DatasetDefinition`: the one place that knows a dataset's classes, label encoding, bands, splits and tasks.

Each shipped dataset module (`isprs`, `loveda`, `isaid`) defines one; a user's dataset is a YAML file
(`cdseg prepare --dataset-def my.yaml`, see docs/data.md). `cdseg prepare` copies `manifest_fields()`
into the prepared manifest, and everything downstream (tasks, training, evaluation, reports, the
pipeline) reads classes and tasks from there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cdseg.errors import DataError

IGNORE_INDEX = 255
RGB = tuple[int, int, int]
_UNKNOWN = 254  # marks a label value or colour that is not in the class table


@dataclass(frozen=True)
class DatasetDefinition:
    """Classes (index = raw class index of a prepared label), how labels encode them, and the tasks.

    Labels encode classes either by colour (`colours`, one RGB per class) or by value (`values`, one
    integer per class). `ignore_colours` / `ignore_values` become the ignore index (255); any other
    colour or value is refused, with counts. `background` names a real background class (model output 0).
    """

    name: str
    classes: tuple[str, ...]
    colours: tuple[RGB, ...] | None = None
    values: tuple[int, ...] | None = None
    ignore_colours: tuple[RGB, ...] = ()
    ignore_values: tuple[int, ...] = ()
    background: str | None = None
    bands: tuple[str, ...] = ("R", "G", "B")
    palette: tuple[RGB, ...] | None = None  # display colours (default: the label colours)
    splits: dict[str, tuple[str, ...]] = field(default_factory=dict)  # official train/test scene ids, if any
    tasks: dict[str, tuple[tuple[str, ...], ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.colours is None) == (self.values is None):
            raise DataError(f"dataset {self.name!r}: give either colours or values for its classes, not both or none")
        table = self.colours if self.colours is not None else self.values
        assert table is not None
        if len(table) != len(self.classes):
            raise DataError(f"dataset {self.name!r}: {len(self.classes)} classes but {len(table)} "
                            f"{'colours' if self.colours is not None else 'values'}; give one per class")
        if len(set(self.classes)) != len(self.classes) or not self.classes:
            raise DataError(f"dataset {self.name!r}: class names must be unique and at least one")
        if len(self.classes) > 250:
            raise DataError(f"dataset {self.name!r} has {len(self.classes)} classes; at most 250 are supported")
        if self.background is not None and self.background not in self.classes:
            raise DataError(f"dataset {self.name!r}: background {self.background!r} is not one of its classes")

    @property
    def encoding(self) -> str:
        """`colour` or `index`: how a release label encodes classes."""
        return "colour" if self.colours is not None else "index"

    def manifest_fields(self) -> dict[str, Any]:
        """What a prepared manifest records of this definition (tasks read it from there)."""
        palette = self.palette or self.colours
        return {
            "dataset": self.name, "classes": list(self.classes), "background": self.background,
            "ignore_index": IGNORE_INDEX, "label_encoding": self.encoding,
            "colours": [list(c) for c in palette] if palette else None,
            "label_values": list(self.values) if self.values is not None else None,
            "tasks": {k: [list(s) for s in v] for k, v in self.tasks.items()},
        }

    def lut(self) -> np.ndarray:
        """Index encoding: 256-entry table label value -> class index (255 ignore, 254 unknown)."""
        assert self.values is not None
        lut = np.full(256, _UNKNOWN, np.uint8)
        for v in self.ignore_values:
            lut[v] = IGNORE_INDEX
        for i, v in enumerate(self.values):
            lut[v] = i
        return lut

    def to_index(self, label: np.ndarray, source: str | Path = "label") -> np.ndarray:
        """A release label (CxHxW uint8: 3 bands for colours, 1 for values) -> HxW raw class indices.

        An unknown colour or value is a DataError naming the file, the three most frequent offenders and
        their pixel counts, and the allowed table.
        """
        if label.dtype != np.uint8:
            raise DataError(f"{source}: a label must have 8-bit pixels, got {label.dtype}; use the release's labels")
        if self.colours is None:
            out = self.lut()[label[0]]
            bad = out == _UNKNOWN
            if bad.any():
                values, counts = np.unique(label[0][bad], return_counts=True)
                top = np.argsort(-counts)[:3]
                shown = ", ".join(f"{values[i]} x{counts[i]}" for i in top)
                allowed = dict(zip(self.classes, self.values or (), strict=True))
                raise DataError(f"{source}: {int(bad.sum())} pixels have a value that is not a {self.name} class "
                                f"({shown}); allowed values are {allowed}"
                                f"{f' and {list(self.ignore_values)} (ignore)' if self.ignore_values else ''}; "
                                "fix the label file or the class table")
            return out
        if label.shape[0] < 3:
            raise DataError(f"{source}: a {self.name} label must be an RGB colour image, it has {label.shape[0]} "
                            "band(s); use the release's colour labels")
        packed = (label[0].astype(np.uint32) << 16) | (label[1].astype(np.uint32) << 8) | label[2]
        keys = [(r << 16) | (g << 8) | b for r, g, b in self.colours]
        ignore = [(r << 16) | (g << 8) | b for r, g, b in self.ignore_colours]
        table = np.asarray(keys + ignore, np.uint32)
        index = np.asarray(list(range(len(keys))) + [IGNORE_INDEX] * len(ignore), np.uint8)
        order = np.argsort(table)
        table, index = table[order], index[order]
        pos = np.clip(np.searchsorted(table, packed), 0, len(table) - 1)
        bad = table[pos] != packed
        if bad.any():
            colours, counts = np.unique(packed[bad], return_counts=True)
            top = np.argsort(-counts)[:3]
            shown = ", ".join(f"({c >> 16},{(c >> 8) & 255},{c & 255}) x{n}" for c, n in zip(colours[top], counts[top],
                                                                                            strict=True))
            raise DataError(f"{source}: {int(bad.sum())} pixels have a colour that is not a {self.name} class colour "
                            f"({shown}); allowed colours are {dict(zip(self.classes, self.colours, strict=True))}; "
                            "fix the label file or the class table")
        return index[pos]

    def to_label(self, index: np.ndarray) -> np.ndarray:
        """HxW raw class indices -> the release's encoding (3xHxW colours or 1xHxW values); 255 -> first ignore."""
        if self.colours is not None:
            table = np.zeros((256, 3), np.uint8)
            table[: len(self.colours)] = np.asarray(self.colours, np.uint8)
            if self.ignore_colours:
                table[IGNORE_INDEX] = self.ignore_colours[0]
            return np.moveaxis(table[index], -1, 0)
        table1 = np.zeros(256, np.uint8)
        table1[: len(self.classes)] = np.asarray(self.values, np.uint8)
        if self.ignore_values:
            table1[IGNORE_INDEX] = self.ignore_values[0]
        return table1[index][None]
