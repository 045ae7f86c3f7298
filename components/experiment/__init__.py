"""The experiment components (`components.experiment.component`; loaded on first access, see components/__init__.py):
`experiment_cell` (one cell's rows), `experiment_gather` (a fan-in of cells) and `experiment_report` (the report)."""

from __future__ import annotations

from typing import Any

__all__ = ["experiment_cell", "experiment_gather", "experiment_report"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from components.experiment import component

        return getattr(component, name)
    raise AttributeError(f"module 'components.experiment' has no attribute {name!r}")
