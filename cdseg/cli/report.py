"""`cdseg report`: one Markdown + HTML report over evaluations of several steps and methods."""

from __future__ import annotations

from cdseg.cli.command import Command
from cdseg.report.config import ReportConfig


def _run(cfg: ReportConfig) -> int:
    from cdseg.report import run_report

    print(run_report(cfg))
    return 0


COMMAND = Command(
    name="report",
    help="compare steps and methods in one Markdown + HTML report",
    config=ReportConfig,
    run=_run,
    description="Collect the metrics.json of `cdseg test` (files, eval folders or a root folder searched "
    "recursively; the method comes from each metrics.json) and write report.md, a self-contained report.html, "
    "report.json and plots/ to --output: old/new/all mIoU per step and method, forgetting per old class, "
    "IoU per class.",
)
