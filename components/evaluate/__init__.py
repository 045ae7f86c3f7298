"""The evaluate component (`components.evaluate.component.evaluate`; loaded on first access, see components/__init__.py)."""

from __future__ import annotations

from typing import Any

__all__ = ["evaluate"]


def __getattr__(name: str) -> Any:
    if name == "evaluate":
        from components.evaluate.component import evaluate

        return evaluate
    raise AttributeError(f"module 'components.evaluate' has no attribute {name!r}")
