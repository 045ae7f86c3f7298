"""Report component: every step's evaluation -> one Markdown + HTML report with plots."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Input, Markdown, Output

from components.settings import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def report(
    report_dir: Output[Artifact],
    report_html: Output[HTML],
    summary: Output[Markdown],
    history: Input[Artifact],
    run_id: str = "",
    keep_pushed_metrics: bool = False,
) -> str:
    """Compare the steps of a run (mIoU of old / new / all classes per step, forgetting per class).

    Args:
        report_dir: the report folder (report.md, report.html, plots, the metrics it was built from).
        report_html: the report as one self-contained HTML page (plots inlined).
        summary: the report's Markdown.
        history: the last evaluate task's `history`: every step's metrics (KFP has no list-of-artifacts input
            outside ParallelFor, so each evaluate task adds its step to the previous one's history).
        run_id: the pipeline run's id; the groups its evaluate steps pushed to the Pushgateway are deleted
            once the report is written (a Pushgateway never forgets on its own).
        keep_pushed_metrics: keep those groups instead (e.g. to compare runs on a dashboard later).

    Returns:
        The per-step table as Markdown.
    """
    import json
    import tempfile
    from pathlib import Path

    from cdseg.errors import ConfigError
    from cdseg.report import build_report
    from components.artifacts import setup_logging
    from components.report import render

    setup_logging()
    steps = render.history_steps(history.path)
    if not steps:
        raise ConfigError("report: no evaluation results; connect the last evaluate task's history")
    metrics_list = [json.loads((step / "metrics.json").read_text()) for step in steps]
    with tempfile.TemporaryDirectory(prefix="cdseg-report-") as tmp:
        out = Path(tmp) / "report"
        build_report(metrics_list, str(out))
        render.publish(str(out), metrics_list, report_dir=report_dir.path, html_path=report_html.path,
                       md_path=summary.path)
    if run_id and not keep_pushed_metrics:
        from cdseg.evaluate.run import delete_pushed

        delete_pushed(run_id)
    table = render.step_table(metrics_list)
    report_dir.metadata["steps"] = len(metrics_list)
    return table
