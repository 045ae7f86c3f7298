"""A user's own dataset: a YAML definition over a folder of GeoTIFF or PNG image/label pairs.

`cdseg prepare --dataset-def my.yaml --input FOLDER ...` (docs/data.md has a complete example):

    name: fields
    classes: {other: 1, crop: 2, meadow: 3}   # label value per class, or [R, G, B] colours
    ignore: [0]                               # values (or colours) that are not a class: ignored
    background: other                         # optional: a real background class (model output 0)
    bands: [R, G, B]                          # band names of the images, in file order
    images: images                            # folder of the images (any depth under --input)
    labels: labels                            # folder of the labels: same file name stem ...
    label_suffix: ""                          # ... plus this suffix (e.g. _mask)
    splits: {test: [s3]}                      # optional: test scene ids (the rest train); or train and test
    tasks: {2-1: [[other, crop], [meadow]]}   # an `offline` task of every class is added
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from cdseg.data.definition import DatasetDefinition
from cdseg.data.release import Entry, SceneFiles
from cdseg.data.source import Source
from cdseg.errors import ConfigError, DataError

KEYS = ("name", "classes", "ignore", "background", "bands", "images", "labels", "label_suffix", "splits", "tasks",
        "palette")
SUFFIXES = (".tif", ".tiff", ".png")


def _colour(value: Any) -> bool:
    return isinstance(value, list | tuple) and len(value) == 3 and all(isinstance(v, int) and 0 <= v <= 255
                                                                       for v in value)


def _value(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 255


class UserSource(Source):
    """Image/label pairs found by folder and file name, classes from the YAML definition."""

    def __init__(self, definition: DatasetDefinition, images: str, labels: str, label_suffix: str,
                 splits: dict[str, list[str]], path: str) -> None:
        self.name = definition.name
        self.definition = definition
        self.products = {"image": definition.bands}
        self.images, self.labels, self.label_suffix = images, labels, label_suffix
        self.splits = splits
        self.path = path

    @classmethod
    def from_file(cls, path: str | Path) -> UserSource:
        """Read and check a definition; every problem is one line naming the key and the fix."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"--dataset-def {path} does not exist; write a dataset definition (docs/data.md has an "
                            "example)")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML ({str(exc).splitlines()[0]}); fix the syntax") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a dataset definition is a mapping with keys {', '.join(KEYS)}")
        unknown = sorted(set(data) - set(KEYS))
        if unknown:
            raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(KEYS)}")
        classes = data.get("classes")
        if not isinstance(classes, dict) or not classes:
            raise ConfigError(f"{path}: 'classes' must map each class name to its label value (0..255) or "
                              "[R, G, B] colour, e.g. {{building: 1, tree: 2}}")
        table = list(classes.values())
        by_colour = all(_colour(v) for v in table)
        if not by_colour and not all(_value(v) for v in table):
            raise ConfigError(f"{path}: 'classes' values must all be label values 0..255 or all [R, G, B] colours; "
                              f"got {table}")
        if len({tuple(v) if by_colour else v for v in table}) != len(table):
            raise ConfigError(f"{path}: two classes share a label {'colour' if by_colour else 'value'}; give each "
                              "class its own")
        ignore = data.get("ignore") or []
        if not isinstance(ignore, list) or not all((_colour if by_colour else _value)(v) for v in ignore):
            raise ConfigError(f"{path}: 'ignore' must be a list of label {'colours' if by_colour else 'values'} "
                              f"like the classes', got {ignore!r}")
        bands = data.get("bands", ["R", "G", "B"])
        if not isinstance(bands, list) or not bands or not all(isinstance(b, str) for b in bands):
            raise ConfigError(f"{path}: 'bands' must be a list of band names in file order, e.g. [R, G, B, IR]")
        names = tuple(str(c) for c in classes)
        tasks = data.get("tasks") or {}
        if not isinstance(tasks, dict) or not all(isinstance(v, list) for v in tasks.values()):
            raise ConfigError(f"{path}: 'tasks' must map a task name to its steps, e.g. {{2-1: [[a, b], [c]]}}")
        tasks = {"offline": [list(names)], **tasks}
        splits = data.get("splits") or {}
        if not isinstance(splits, dict) or set(splits) - {"train", "test"} or \
                not all(isinstance(v, list) for v in splits.values()):
            raise ConfigError(f"{path}: 'splits' may list scene ids under train and test, e.g. {{test: [s3, s4]}}")
        palette = data.get("palette")
        try:
            definition = DatasetDefinition(
                str(data.get("name", path.stem)), names,
                colours=tuple(tuple(v) for v in table) if by_colour else None,
                values=None if by_colour else tuple(table),
                ignore_colours=tuple(tuple(v) for v in ignore) if by_colour else (),
                ignore_values=() if by_colour else tuple(ignore), background=data.get("background"),
                bands=tuple(bands), palette=tuple(tuple(c) for c in palette) if palette else None,
                tasks={k: tuple(tuple(str(c) for c in s) for s in v) for k, v in tasks.items()})
        except DataError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        for name, steps in definition.tasks.items():
            _check_task(path, name, steps, definition)
        return cls(definition, str(data.get("images", "images")), str(data.get("labels", "labels")),
                   str(data.get("label_suffix", "")), {k: [str(s) for s in v] for k, v in splits.items()}, str(path))

    def scenes(self, entries: list[Entry]) -> dict[str, SceneFiles]:
        images = Path(self.images).name
        labels = Path(self.labels).name
        found: dict[str, SceneFiles] = {}
        wanted_labels: dict[str, Entry] = {}
        for e in entries:
            p = PurePosixPath(e.path.replace("\\", "/"))
            if p.suffix.lower() not in SUFFIXES:
                continue
            if p.parent.name == labels and p.stem.endswith(self.label_suffix):
                wanted_labels[p.stem[: len(p.stem) - len(self.label_suffix)] if self.label_suffix else p.stem] = e
            elif p.parent.name == images:
                found[p.stem] = SceneFiles(p.stem, images={"image": e})
        if not found:
            raise DataError(f"no image (.tif, .tiff, .png) in a folder named {images!r} under the input; set 'images' "
                            f"in {self.path} to the folder of your images")
        for sid, scene in found.items():
            scene.label = wanted_labels.get(sid)
            scene.split = "test" if sid in self.splits.get("test", []) else "train"
        return found

    def official_splits(self, found: dict[str, SceneFiles]) -> dict[str, list[str]]:
        listed = [s for v in self.splits.values() for s in v]
        missing = sorted(set(listed) - set(found))
        if missing:
            raise DataError(f"{self.path}: splits name scene(s) {', '.join(missing)} that have no image; scenes found: "
                            f"{', '.join(sorted(found))}")
        test = sorted(self.splits.get("test", []))
        train = sorted(self.splits["train"]) if "train" in self.splits else sorted(s for s in found if s not in test)
        return {"train": train, "test": test}

    def label_of(self, scene: SceneFiles, cfg: Any) -> Entry:
        if scene.label is None:
            raise DataError(f"image {scene.images['image']} has no label {scene.scene_id}{self.label_suffix}.png/.tif "
                            f"in a folder named {Path(self.labels).name!r}; add it, fix 'labels'/'label_suffix' in "
                            f"{self.path}, or leave the scene out with --scenes")
        return scene.label

    def channels(self, cfg: Any) -> tuple[str, ...]:
        if cfg.channels != "auto":
            raise DataError(f"--channels {cfg.channels}: a defined dataset has the bands of its definition "
                            f"({','.join(self.definition.bands)}); use --channels auto")
        return self.definition.bands


def _check_task(path: Path, name: str, steps: tuple[tuple[str, ...], ...], definition: DatasetDefinition) -> None:
    seen: set[str] = set()
    for i, step in enumerate(steps):
        if not step:
            raise ConfigError(f"{path}: task {name!r} step {i} is empty; give each step at least one class")
        for cls in step:
            if cls not in definition.classes:
                raise ConfigError(f"{path}: task {name!r} step {i} names unknown class {cls!r}; classes are "
                                  f"{', '.join(definition.classes)}")
            if cls in seen:
                raise ConfigError(f"{path}: task {name!r} lists class {cls!r} twice; each class belongs to one step")
            seen.add(cls)
