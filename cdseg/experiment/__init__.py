"""`cdseg experiment`: a grid of tasks x methods (or variants) x seeds, trained, tested and compared with
statistics over seeds (`run_experiment`)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

from cdseg.experiment.config import ExperimentConfig

__all__ = ["ExperimentConfig", "run_experiment"]


def run_experiment(cfg: ExperimentConfig, command: str | None = None) -> dict[str, Any]:
    """Run the grid (finished steps are skipped), then write `<output>/report/`; returns counts and the report path."""
    from cdseg import storage as store
    from cdseg.experiment.grid import collect, run_grid
    from cdseg.experiment.report import write_report

    counts = run_grid(cfg)
    rows = collect(cfg)
    report_uri = store.join(cfg.output, "report")
    command = command if command is not None else " ".join(shlex.quote(a) for a in ["cdseg", *sys.argv[1:]])
    with store.staged_dir(report_uri, replace=True) as tmp:
        write_report(rows, cfg.methods, cfg.confidence, Path(tmp), command)
    return {**counts, "rows": len(rows), "report": store.join(report_uri, "report.md")}
