"""Reports over several evaluations (steps and methods): tables, forgetting, plots; Markdown and HTML."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cdseg.report.config import ReportConfig

__all__ = ["build_report", "run_report"]


def run_report(cfg: ReportConfig) -> str:
    """Build the report named by `cfg`; returns the URI of the report folder."""
    from cdseg.report.report import run_report as _run

    return _run(cfg)


def build_report(metrics: list[dict[str, Any]], out_dir: str | Path, title: str = "cdseg report") -> Path:
    """Write report.md / report.html / plots into a local folder from metrics.json contents."""
    from cdseg.report.report import build_report as _build

    return _build(metrics, out_dir, title)
