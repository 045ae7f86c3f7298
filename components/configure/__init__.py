"""The configure component (`components.configure.component.configure`; loaded on first access, see components/__init__.py)."""

from __future__ import annotations

from typing import Any

__all__ = ["configure"]


def __getattr__(name: str) -> Any:
    if name == "configure":
        from components.configure.component import configure

        return configure
    raise AttributeError(f"module 'components.configure' has no attribute {name!r}")
