"""The prepare component (`components.prepare.component.prepare`; loaded on first access, see components/__init__.py)."""

from __future__ import annotations

from typing import Any

__all__ = ["prepare"]


def __getattr__(name: str) -> Any:
    if name == "prepare":
        from components.prepare.component import prepare

        return prepare
    raise AttributeError(f"module 'components.prepare' has no attribute {name!r}")
