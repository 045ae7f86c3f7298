"""`cdseg experiment`: tasks x methods x seeds, trained, tested and compared with statistics over seeds."""

from __future__ import annotations

from cdseg.cli.command import Command
from cdseg.experiment.config import ExperimentConfig


def _run(cfg: ExperimentConfig) -> int:
    from cdseg.experiment import run_experiment

    result = run_experiment(cfg)
    print(f"steps: {result['steps']} in the grid, {result['ran']} run now, {result['skipped']} done already")
    print(f"report: {result['report']}")
    return 0


COMMAND = Command(
    name="experiment",
    help="a grid of tasks x methods x seeds, with statistics over seeds",
    config=ExperimentConfig,
    run=_run,
    description="Train and test every step of every cell of the grid (--tasks x --methods x --seeds) on a prepared "
    "dataset, then write <output>/report/report.md: old / new / all mIoU per step and method as mean ± sd with a "
    "Student-t interval over seeds, paired differences between methods (same seed) with the paired t-test and the "
    "sign test, per-class forgetting, and miou.png. Each cell is a run folder as cdseg train / test write it: "
    "finished steps are skipped and an interrupted one resumes, so rerunning the same command finishes the grid. "
    "Methods whose step 0 is identical share one step-0 model per task and seed (ft, uft and mib; mib-cd and "
    "ft-cd, whose step 0 adds the invariance term). Choose settings with --split val; report --split test.",
    epilog="examples:\n"
    "  cdseg experiment --dataset data/prepared --methods ft,mib,mib-cd --seeds 0,1,2,3,4 --tasks 222a,321 \\\n"
    "      --train-options '{\"model.encoder\": \"resnet18\", \"model.pretrained\": false, \"trainer.max_iters\": 320}'\n"
    "  cdseg experiment ... --methods mib-cd,mib-cd+feature-dropout \\\n"
    "      --variants '{\"mib-cd+feature-dropout\": {\"model.feature_dropout\": true}}'\n"
    "  cdseg experiment ... --workers 2    (two runs at once, each in its own process)",
)
