"""Incremental tasks: which classes each step learns, model heads, and the label mapping per split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cdseg.data.isprs import CLASSES, IGNORE_INDEX
from cdseg.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")

#: The original project's ISPRS tasks (seed-spec 3.1), as class names per step.
SHIPPED: dict[str, list[list[str]]] = {
    "offline": [list(CLASSES)],
    "222a": [["impervious_surfaces", "low_vegetation"], ["building", "tree"], ["car", "clutter"]],
    "321": [["building", "tree", "clutter"], ["impervious_surfaces", "low_vegetation"], ["car"]],
    "6s": [["building"], ["tree"], ["impervious_surfaces"], ["low_vegetation"], ["car"], ["clutter"]],
}


@dataclass(frozen=True)
class Task:
    """A sequence of steps, each a list of raw class names learned at that step."""

    name: str
    steps: tuple[tuple[str, ...], ...]

    def __post_init__(self) -> None:
        validate_steps(self.name, [list(s) for s in self.steps])

    @property
    def num_steps(self) -> int:
        return len(self.steps)

    def check_step(self, step: int) -> int:
        """`step`, or a ConfigError naming the valid range."""
        if not isinstance(step, int) or not 0 <= step < self.num_steps:
            raise ConfigError(f"--task.step {step} is out of range for task {self.name!r}, which has steps "
                              f"0..{self.num_steps - 1}")
        return step

    def new_classes(self, step: int) -> list[str]:
        """Classes learned at `step`."""
        return list(self.steps[self.check_step(step)])

    def old_classes(self, step: int) -> list[str]:
        """Classes learned before `step`, in task order."""
        self.check_step(step)
        return [c for s in self.steps[:step] for c in s]

    def seen_classes(self, step: int) -> list[str]:
        """Old then new classes (the model's outputs 1.. at `step`)."""
        return self.old_classes(step) + self.new_classes(step)

    def future_classes(self, step: int) -> list[str]:
        """Raw classes not seen up to `step` (later steps, or in no step at all)."""
        seen = set(self.seen_classes(step))
        return [c for c in CLASSES if c not in seen]

    def heads(self, step: int) -> list[int]:
        """Outputs per classifier head up to `step`; head 0 includes background."""
        self.check_step(step)
        return [len(self.steps[0]) + 1] + [len(s) for s in self.steps[1 : step + 1]]

    def num_outputs(self, step: int) -> int:
        """Total model outputs at `step` (background + seen classes)."""
        return sum(self.heads(step))

    def class_names(self, step: int) -> list[str]:
        """Name of each model output at `step`; 0 is background."""
        return ["background", *self.seen_classes(step)]

    def raw_indices(self, names: list[str]) -> list[int]:
        """Raw dataset indices of class names."""
        return [CLASSES.index(n) for n in names]

    def label_lut(self, step: int, split: str) -> np.ndarray:
        """A 256-entry uint8 table mapping raw labels to targets at `step` for `split`.

        Output index of a class = 1 + its position in task order; 255 stays 255.
        train: new classes -> their index, old and future -> 0 (MiB's background shift);
        val and test: old and new classes -> their index, future -> 0 (validation scores old AND new,
        unlike the original, which ignored everything but the new classes).
        """
        if split not in SPLITS:
            raise ConfigError(f"split {split!r} is not one of {', '.join(SPLITS)}")
        lut = np.zeros(256, np.uint8)
        lut[IGNORE_INDEX] = IGNORE_INDEX
        keep = set(self.new_classes(step)) if split == "train" else set(self.seen_classes(step))
        for out, name in enumerate(self.seen_classes(step), start=1):
            if name in keep:
                lut[CLASSES.index(name)] = out
        return lut

    def key(self) -> str:
        """A stable text identity (name and steps), for cache keys."""
        return f"{self.name}:" + "|".join(",".join(s) for s in self.steps)


def validate_steps(name: str, steps: Any) -> None:
    """One-line ConfigError for unknown class names, duplicates or empty steps."""
    valid = ", ".join(CLASSES)
    if not isinstance(steps, list) or not steps or not all(isinstance(s, list | tuple) for s in steps):
        raise ConfigError(f"task {name!r}: steps must be a non-empty list of lists of class names ({valid})")
    seen: set[str] = set()
    for i, step in enumerate(steps):
        if not step:
            raise ConfigError(f"task {name!r}: step {i} is empty; give each step at least one of: {valid}")
        for cls in step:
            if cls not in CLASSES:
                raise ConfigError(f"task {name!r}: step {i} names unknown class {cls!r}; valid names are: {valid}")
            if cls in seen:
                raise ConfigError(f"task {name!r}: class {cls!r} appears more than once (again in step {i}); "
                                  "each class belongs to one step")
            seen.add(cls)


def load_task_file(path: str | Path) -> Task:
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
    validate_steps(name, data)
    return Task(name, tuple(tuple(s) for s in data))


def get_task(name_or_yaml: str | Path) -> Task:
    """A shipped task by name (offline, 6s, 222a, 321) or a user task from a YAML file."""
    text = str(name_or_yaml)
    if text in SHIPPED:
        return Task(text, tuple(tuple(s) for s in SHIPPED[text]))
    if text.endswith((".yaml", ".yml")) or Path(text).is_file():
        return load_task_file(text)
    raise ConfigError(f"unknown task {text!r}; use one of {', '.join(SHIPPED)} or the path of a task YAML file")
