"""Incremental tasks: which classes each step learns, model heads, and the label mapping per split.

A task knows nothing of any dataset: its class list, background class and ignore value come from the
prepared dataset's manifest (or a dataset definition), passed in as a mapping with the keys `classes`,
`background`, `ignore_index` and `tasks` (name -> steps of class names).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cdseg.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")
IGNORE_INDEX = 255


@dataclass(frozen=True)
class Task:
    """A sequence of steps, each a list of raw class names learned at that step.

    `classes` are the dataset's raw classes (index = raw label value). When the dataset has a real
    background class (`background`, e.g. iSAID's or LoveDA's), it is the model's output 0 and may be
    listed only in step 0; otherwise output 0 is MiB's background, which no raw class maps to at the last
    step of a task that covers every class.
    """

    name: str
    steps: tuple[tuple[str, ...], ...]
    classes: tuple[str, ...]
    background: str | None = None
    ignore_index: int = IGNORE_INDEX

    def __post_init__(self) -> None:
        validate_steps(self.name, [list(s) for s in self.steps], self.classes, self.background)

    @property
    def num_steps(self) -> int:
        return len(self.steps)

    def check_step(self, step: int) -> int:
        """`step`, or a ConfigError naming the valid range."""
        if not isinstance(step, int) or not 0 <= step < self.num_steps:
            raise ConfigError(f"--task.step {step} is out of range for task {self.name!r}, which has steps "
                              f"0..{self.num_steps - 1}")
        return step

    def _learned(self, step: int) -> list[str]:
        return [c for c in self.steps[step] if c != self.background]

    def new_classes(self, step: int) -> list[str]:
        """Classes learned at `step` (the background class excluded: it is output 0)."""
        return self._learned(self.check_step(step))

    def old_classes(self, step: int) -> list[str]:
        """Classes learned before `step`, in task order."""
        self.check_step(step)
        return [c for s in range(step) for c in self._learned(s)]

    def seen_classes(self, step: int) -> list[str]:
        """Old then new classes (the model's outputs 1.. at `step`)."""
        return self.old_classes(step) + self.new_classes(step)

    def future_classes(self, step: int) -> list[str]:
        """Raw classes not seen up to `step` (later steps, or in no step at all); never the background."""
        seen = set(self.seen_classes(step))
        return [c for c in self.classes if c not in seen and c != self.background]

    def heads(self, step: int) -> list[int]:
        """Outputs per classifier head up to `step`; head 0 includes background."""
        self.check_step(step)
        return [len(self._learned(0)) + 1] + [len(self._learned(s)) for s in range(1, step + 1)]

    def num_outputs(self, step: int) -> int:
        """Total model outputs at `step` (background + seen classes)."""
        return sum(self.heads(step))

    def class_names(self, step: int) -> list[str]:
        """Name of each model output at `step`; 0 is background (the dataset's own background class if it has one)."""
        return [self.background or "background", *self.seen_classes(step)]

    def raw_indices(self, names: list[str]) -> list[int]:
        """Raw dataset indices of class names."""
        return [self.classes.index(n) for n in names]

    def learnable_indices(self) -> list[int]:
        """Raw indices of every class but the background class."""
        return [i for i, c in enumerate(self.classes) if c != self.background]

    def label_lut(self, step: int, split: str) -> np.ndarray:
        """A 256-entry uint8 table mapping raw labels to targets at `step` for `split`.

        Output index of a class = 1 + its position in task order; the ignore value stays ignore (255);
        a real background class maps to 0.
        train: new classes -> their index, old and future -> 0 (MiB's background shift);
        val and test: old and new classes -> their index, future -> 0 (validation scores old AND new,
        unlike the original, which ignored everything but the new classes).
        """
        if split not in SPLITS:
            raise ConfigError(f"split {split!r} is not one of {', '.join(SPLITS)}")
        lut = np.zeros(256, np.uint8)
        lut[self.ignore_index] = IGNORE_INDEX
        keep = set(self.new_classes(step)) if split == "train" else set(self.seen_classes(step))
        for out, name in enumerate(self.seen_classes(step), start=1):
            if name in keep:
                lut[self.classes.index(name)] = out
        return lut

    def select_patches(self, fingerprint: str, hist: np.ndarray, step: int, split: str, mode: str,
                       seed: int) -> np.ndarray:
        """Rows of `hist` (patch class histograms) that `step` trains on with filter `mode` (cached)."""
        from cdseg.tasks.filters import cached_select

        return cached_select(fingerprint, hist, self, step, split, mode, seed)

    def key(self) -> str:
        """A stable text identity (name, classes and steps), for cache keys."""
        return f"{self.name}:" + ",".join(self.classes) + ":" + "|".join(",".join(s) for s in self.steps)


def validate_steps(name: str, steps: Any, classes: tuple[str, ...] | list[str], background: str | None = None) -> None:
    """One-line ConfigError for unknown class names, duplicates, empty steps or a late background."""
    valid = ", ".join(classes)
    if not isinstance(steps, list) or not steps or not all(isinstance(s, list | tuple) for s in steps):
        raise ConfigError(f"task {name!r}: steps must be a non-empty list of lists of class names ({valid})")
    seen: set[str] = set()
    for i, step in enumerate(steps):
        if not step:
            raise ConfigError(f"task {name!r}: step {i} is empty; give each step at least one of: {valid}")
        for cls in step:
            if cls not in classes:
                raise ConfigError(f"task {name!r}: step {i} names unknown class {cls!r}; valid names are: {valid}")
            if cls in seen:
                raise ConfigError(f"task {name!r}: class {cls!r} appears more than once (again in step {i}); "
                                  "each class belongs to one step")
            if cls == background and i > 0:
                raise ConfigError(f"task {name!r}: the background class {cls!r} is in step {i}; it is the model's "
                                  "output 0 from step 0 on: list it in step 0 or nowhere")
            seen.add(cls)
        if i == 0 and background is not None and list(step) == [background] and len(steps) > 1:
            raise ConfigError(f"task {name!r}: step 0 holds only the background class; give step 0 at least one "
                              "other class")


def _dataset_fields(dataset: Mapping[str, Any]) -> tuple[tuple[str, ...], str | None, int]:
    classes = dataset.get("classes")
    if not isinstance(classes, list | tuple) or not classes:
        raise DataError("the prepared dataset lists no classes; run cdseg prepare again to rebuild it")
    return tuple(str(c) for c in classes), dataset.get("background"), int(dataset.get("ignore_index", IGNORE_INDEX))


def load_task_file(path: str | Path, dataset: Mapping[str, Any]) -> Task:
    """A user task from YAML: `{name: ..., steps: [[class, ...], ...]}` or just the list of steps."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"task file {path} does not exist; pass a YAML file with 'steps: [[building], [tree]]'")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"task file {path} is not valid YAML ({str(exc).splitlines()[0]}); fix the syntax") from exc
    name = path.stem
    if isinstance(data, dict):
        unknown = set(data) - {"name", "steps"}
        if unknown:
            raise ConfigError(f"task file {path}: unknown key(s) {', '.join(sorted(unknown))}; allowed: name, steps")
        name, data = str(data.get("name", name)), data.get("steps")
    classes, background, ignore = _dataset_fields(dataset)
    validate_steps(name, data, classes, background)
    return Task(name, tuple(tuple(s) for s in data), classes, background, ignore)


def task_names(dataset: Mapping[str, Any]) -> list[str]:
    """The tasks a dataset (manifest or definition) defines."""
    tasks = dataset.get("tasks") or {}
    return list(tasks) if isinstance(tasks, Mapping) else []


def get_task(name_or_yaml: str | Path, dataset: Mapping[str, Any]) -> Task:
    """A task the dataset defines (its manifest's `tasks`), or a user task from a YAML file of class names."""
    text = str(name_or_yaml)
    tasks = dataset.get("tasks") or {}
    if text in tasks:
        classes, background, ignore = _dataset_fields(dataset)
        steps = tasks[text]
        validate_steps(text, [list(s) for s in steps], classes, background)
        return Task(text, tuple(tuple(s) for s in steps), classes, background, ignore)
    if text.endswith((".yaml", ".yml")) or Path(text).is_file():
        return load_task_file(text, dataset)
    where = f" of dataset {dataset['dataset']!r}" if dataset.get("dataset") else ""
    raise ConfigError(f"unknown task {text!r}; use one of the tasks{where}: {', '.join(tasks) or 'none'}, "
                      "or the path of a task YAML file")
