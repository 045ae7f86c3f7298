"""The train component (`components.train.component.train_step`; loaded on first access, see components/__init__.py)."""

from __future__ import annotations

from typing import Any

__all__ = ["train_step"]


def __getattr__(name: str) -> Any:
    if name == "train_step":
        from components.train.component import train_step

        return train_step
    raise AttributeError(f"module 'components.train' has no attribute {name!r}")
