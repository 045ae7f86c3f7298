"""The report component (`components.report.component.report`; loaded on first access, see components/__init__.py)."""

from __future__ import annotations

from typing import Any

__all__ = ["report"]


def __getattr__(name: str) -> Any:
    if name == "report":
        from components.report.component import report

        return report
    raise AttributeError(f"module 'components.report' has no attribute {name!r}")
