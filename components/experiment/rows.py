"""Rows of an experiment run as a pipeline (imports no kfp): each cell's evaluations become the rows
`cdseg.experiment.report` reads, exactly as the local runner's `collect` makes them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: the file a rows artifact (a cell's, or a fan-in's) holds
ROWS_FILE = "rows.json"
#: the key of a row's run id (the Pushgateway grouping key of its evaluation); not part of the report's rows
RUN_KEY = "run_id"


def read_rows(folder: str) -> list[dict[str, Any]]:
    """The rows kept in a rows artifact's folder."""
    rows: list[dict[str, Any]] = json.loads((Path(folder) / ROWS_FILE).read_text())
    return rows


def write_rows(folder: str, rows: Sequence[dict[str, Any]]) -> None:
    """Keep `rows` in a rows artifact's folder."""
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    (path / ROWS_FILE).write_text(json.dumps(list(rows), indent=1) + "\n")


def history_steps(history: str) -> list[str]:
    """The step folders (`step_<k>/`, each holding metrics.json) of an evaluate task's `history`, step 0 first."""
    folders = sorted(Path(history).glob("step_*"), key=lambda p: int(p.name.removeprefix("step_")))
    if not folders:
        raise ValueError(f"{history} holds no step_<k>/ folder; connect the cell's last evaluation's history")
    return [str(f) for f in folders]


def cell_rows(task: str, name: str, seed: int, step0_from: str, eval_dirs: Sequence[str],
              run_id: str = "") -> list[dict[str, Any]]:
    """One row per step of a cell, from its evaluate results (folders holding metrics.json, step 0 first);
    `run_id`, the id its evaluations pushed metrics under, rides along as `run_id` (see `split_runs`)."""
    from cdseg.experiment.grid import Cell, row_of

    cell = Cell(task, name, int(seed))
    rows = []
    for step, folder in enumerate(eval_dirs):
        metrics = json.loads((Path(folder) / "metrics.json").read_text())
        if int(metrics.get("step", step)) != step:
            raise ValueError(f"cell {task}/{name}/seed {seed}: the results given as step {step} are step "
                             f"{metrics.get('step')}'s; connect step k's evaluation to step_{step}")
        row = row_of(metrics, cell, step, step0_from if step == 0 else name)
        rows.append({**row, RUN_KEY: run_id} if run_id else row)
    return rows


def split_runs(rows: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """The rows as the report reads them (the local runner's), and the distinct run ids they carried."""
    runs = sorted({str(r[RUN_KEY]) for r in rows if r.get(RUN_KEY)})
    return [{k: v for k, v in r.items() if k != RUN_KEY} for r in rows], runs


def merged(groups: Sequence[Sequence[dict[str, Any]]], tasks: Sequence[str] = (),
           names: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Every group's rows in the local runner's order (task, seed, name as given, step); a (task, name, seed,
    step) given twice is refused (the run's seeds named a seed twice)."""
    from cdseg.errors import ConfigError

    out: dict[tuple[str, str, int, int], dict[str, Any]] = {}
    for rows in groups:
        for row in rows:
            key = (row["task"], row["name"], int(row["seed"]), int(row["step"]))
            if key in out:
                raise ConfigError(f"seed {key[2]} of {key[0]}/{key[1]} ran twice; give each seed once in the "
                                  f"pipeline parameter seeds")
            out[key] = row
    def rank(order: Sequence[str], value: str) -> tuple[int, str]:
        return (list(order).index(value), "") if value in order else (len(order), value)

    return [out[k] for k in sorted(out, key=lambda k: (rank(tasks, k[0]), k[2], rank(names, k[1]), k[3]))]
