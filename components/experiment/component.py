"""Experiment components: a cell's rows (`experiment_cell`), a fan-in of a ParallelFor's cells
(`experiment_gather`) and the experiment's report (`experiment_report`), as `cdseg experiment` writes it."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Markdown, Output

from components.settings import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def experiment_cell(
    task: str,
    name: str,
    seed: int,
    step0_from: str,
    rows: Output[Artifact],
    history: Input[Artifact],
    earlier: Input[Artifact] | None = None,
    run_id: str = "",
) -> None:
    """One row per step of a cell (task, method or variant, seed), from its evaluations.

    Args:
        task: the cell's task.
        name: the cell's method or variant (`method+label`).
        seed: the cell's training seed.
        step0_from: the method or variant whose step-0 model the cell starts from (itself unless shared).
        rows: rows.json: the rows of `earlier` followed by this cell's.
        history: the `history` of the cell's last evaluation: every step's metrics.json (`step_<k>/`), step 0's
            included (the evaluate tasks of a cell are chained through their `earlier` input, so a task has
            as many steps as it needs).
        earlier: the rows of the cells before this one in the same ParallelFor iteration (one fan-in per loop).
        run_id: the run id the cell's evaluations pushed their metrics under (kept in its rows for the report,
            which deletes those groups from the Pushgateway).
    """
    from components.artifacts import setup_logging
    from components.experiment.rows import cell_rows, history_steps, read_rows, write_rows

    setup_logging()
    steps = history_steps(history.path)
    before = read_rows(earlier.path) if earlier is not None else []
    write_rows(rows.path, before + cell_rows(task, name, seed, step0_from, steps, run_id))


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def experiment_gather(
    cells: Input[list[Artifact]],
    rows: Output[Artifact],
    earlier: Input[Artifact] | None = None,
) -> int:
    """Gather the rows of every iteration of a ParallelFor (and of the loops gathered before it).

    Args:
        cells: the rows artifacts of the loop's iterations (dsl.Collected).
        rows: rows.json: the rows of `earlier` and of every iteration.
        earlier: the rows gathered from the loops before this one.

    Returns:
        How many rows were gathered so far.
    """
    from components.artifacts import setup_logging
    from components.experiment.rows import merged, read_rows, write_rows

    setup_logging()
    groups = [read_rows(a.path) for a in cells] + ([read_rows(earlier.path)] if earlier is not None else [])
    out = merged(groups)
    write_rows(rows.path, out)
    return len(out)


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def experiment_report(
    cells: Input[list[Artifact]],
    report_dir: Output[Artifact],
    summary: Output[Markdown],
    tasks: list,
    names: list,
    confidence: float = 0.95,
    command: str = "",
    earlier: Input[Artifact] | None = None,
    keep_pushed_metrics: bool = False,
) -> int:
    """The experiment's report, as `cdseg experiment` writes it: report.md, results.json, miou.png.

    Args:
        cells: the rows artifacts of the last loop's iterations (dsl.Collected).
        report_dir: the report folder (report.md, results.json, miou.png).
        summary: report.md, shown in the KFP UI.
        tasks: the grid's tasks, in its order.
        names: the grid's methods and variants, in its order (the report's row and comparison order).
        confidence: level of the confidence intervals.
        command: how the pipeline was compiled (the report's "reproduce with").
        earlier: the rows gathered from every other loop (experiment_gather).
        keep_pushed_metrics: keep the metrics the cells' evaluations pushed to the Pushgateway (default: delete
            them once the report is written; a Pushgateway never forgets on its own).

    Returns:
        How many rows (cell steps) the report was built from.
    """
    from pathlib import Path

    from cdseg.experiment.report import write_report
    from components.artifacts import setup_logging
    from components.experiment.rows import merged, read_rows, split_runs

    setup_logging()
    groups = [read_rows(a.path) for a in cells] + ([read_rows(earlier.path)] if earlier is not None else [])
    rows, runs = split_runs(merged(groups, [str(t) for t in tasks], [str(n) for n in names]))
    page = write_report(rows, [str(n) for n in names], float(confidence), Path(report_dir.path), command)
    Path(summary.path).write_text(page.read_text())
    if not keep_pushed_metrics:
        from cdseg.evaluate.run import delete_pushed

        for run in runs:
            delete_pushed(run)
    report_dir.metadata["rows"] = len(rows)
    return len(rows)
