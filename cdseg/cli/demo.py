"""`cdseg demo`: the main job (generated scenes -> the pipeline, locally on CPU -> table and report)."""

from __future__ import annotations

from cdseg.cli.command import Command
from cdseg.demo import DemoConfig


def _run(cfg: DemoConfig) -> int:
    from cdseg.demo import print_table, run_demo

    result = run_demo(cfg)
    print()
    print_table(result.metrics)
    print(f"\nreport: {result.report_dir / 'report.html'} (and report.md)")
    print(f"wall time: {result.wall_s / 60:.1f} min")
    return 0


COMMAND = Command(
    name="demo",
    help="the main job: synth -> pipeline (local, CPU) -> per-step table and report",
    config=DemoConfig,
    run=_run,
    description="Generate a small set of aerial scenes in the ISPRS Potsdam layout, run the Kubeflow pipeline of "
    "--task with KFP's local runner on CPU (prepare -> train step 0 -> evaluate -> train step 1 from step 0's "
    "checkpoint -> ... -> report), print old / new / all mIoU per step and write a report with plots. "
    "--compare ft,mib,mib-cd runs methods side by side (sharing the prepared data, and the step-0 model "
    "between methods that train step 0 identically).",
    epilog="examples:\n  cdseg demo\n  cdseg demo --compare ft,mib,mib-cd\n  cdseg demo --epochs 2 --iterations 10",
)
