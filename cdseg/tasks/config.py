"""`TaskConfig`: which incremental task and step a run trains or tests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, field_validator

from cdseg.config import Section


class TaskConfig(Section):
    """The incremental task, the step, and how training patches are chosen for the step."""

    name: str = Field("offline", description="a task of the prepared dataset (its manifest lists them, e.g. "
                                             "offline, 6s, 222a, 321 for ISPRS; docs/data.md) or the path of a task "
                                             "YAML file (steps as lists of class names)")
    step: int = Field(0, description="incremental step, 0-based")
    filter_mode: Literal["overlap", "disjoint", "split"] = Field(
        "overlap", description="training patches of a step: overlap (contains a new class), disjoint (a new class "
                               "and no future one) or split (the original's one-step-per-patch partition)")
    seed: int = Field(1337, description="seed of the split filter mode's patch order")

    @field_validator("step")
    @classmethod
    def _step(cls, v: int) -> int:
        if v < 0:
            raise ValueError(f"step={v} must be >= 0")
        return v

    def task(self, dataset: Mapping[str, Any]):  # -> Task (kept untyped here to avoid importing numpy at config import)
        """The resolved `Task` of `dataset` (a prepared dataset's manifest), its step checked."""
        from cdseg.tasks.task import get_task

        task = get_task(self.name, dataset)
        task.check_step(self.step)
        return task
