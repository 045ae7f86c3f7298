"""`TaskConfig`: which incremental task and step a run trains or tests."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from cdseg.config import Section


class TaskConfig(Section):
    """The incremental task, the step, and how training patches are chosen for the step."""

    name: str = Field("offline", description="shipped task (offline, 6s, 222a, 321) or the path of a task YAML file "
                                             "(steps as lists of class names)")
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

    @model_validator(mode="after")
    def _known(self) -> TaskConfig:
        from cdseg.tasks.task import SHIPPED, get_task

        if self.name in SHIPPED or self.name.endswith((".yaml", ".yml")):
            task = get_task(self.name)
            if self.step >= task.num_steps:
                raise ValueError(f"step={self.step} is out of range for task {self.name!r}: "
                                 f"steps are 0..{task.num_steps - 1}")
            return self
        raise ValueError(f"unknown task {self.name!r}; use one of {', '.join(SHIPPED)} or a .yaml task file")

    def task(self):  # -> Task (kept untyped here to avoid importing numpy at config import)
        """The resolved `Task`."""
        from cdseg.tasks.task import get_task

        return get_task(self.name)
