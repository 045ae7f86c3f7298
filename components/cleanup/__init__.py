"""The cleanup component (`components.cleanup.component.cleanup`; loaded on first access, see components/__init__.py)."""

from __future__ import annotations

from typing import Any

__all__ = ["cleanup"]


def __getattr__(name: str) -> Any:
    if name == "cleanup":
        from components.cleanup.component import cleanup

        return cleanup
    raise AttributeError(f"module 'components.cleanup' has no attribute {name!r}")
