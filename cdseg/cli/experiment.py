"""`cdseg experiment`: tasks x methods x seeds, trained, tested and compared with statistics over seeds."""

from __future__ import annotations

from pydantic import Field, model_validator

from cdseg.cli.command import Command
from cdseg.cli.pipeline import BuildSection
from cdseg.experiment.config import ExperimentConfig


class ExperimentCommand(ExperimentConfig):
    """`cdseg experiment`: run the grid here, or compile it as one Kubeflow pipeline (--compile-pipeline)."""

    dataset: str = Field("", description="prepared dataset folder or URI (cdseg prepare); not with --compile-pipeline, "
                         "whose pipeline prepares its own from the run parameter source")
    compile_pipeline: str = Field("", description="write the grid as one Kubeflow pipeline to this YAML file "
                                  "instead of running it (docs/experiments.md); seeds, train and test options "
                                  "stay run parameters")
    parallelism: int = Field(0, ge=0, description="with --compile-pipeline: seeds of one step-0 group trained at "
                             "once (0: all of them)")
    dataset_name: str = Field("potsdam", description="with --compile-pipeline: the shipped dataset whose tasks "
                              "--tasks names (docs/data.md lists them; its release is the run parameter source)")
    dataset_def: str = Field("", description="with --compile-pipeline: YAML definition of your own dataset (its "
                             "tasks), instead of --dataset-name")
    build: BuildSection = Field(default_factory=BuildSection)

    @model_validator(mode="after")
    def _dataset(self) -> ExperimentCommand:
        if self.compile_pipeline and self.dataset:
            raise ValueError("--dataset is not used with --compile-pipeline: the pipeline prepares its dataset from "
                             "its run parameter source; drop --dataset")
        if not self.compile_pipeline and ("dataset_name" in self.model_fields_set or self.dataset_def):
            raise ValueError("--dataset-name and --dataset-def go with --compile-pipeline; a local grid reads the "
                             "classes and tasks from its prepared --dataset")
        if not self.compile_pipeline and not self.dataset:
            raise ValueError("--dataset is required: the prepared dataset (cdseg prepare), or give "
                             "--compile-pipeline FILE to write the grid as a Kubeflow pipeline")
        return self

    def grid(self) -> ExperimentConfig:
        """The grid's own options (what the local runner and the pipeline factory read)."""
        return ExperimentConfig.model_validate(self.model_dump(exclude={"compile_pipeline", "parallelism", "build",
                                                                        "dataset_name", "dataset_def"}))


def _compile(cfg: ExperimentCommand) -> int:
    import shlex
    import sys

    from pipelines.experiment import compile_experiment, step0_groups

    grid = cfg.grid()
    # the report's "reproduce with": the compile command, and where the run's own parameters (seeds, ...) are
    command = (" ".join(shlex.quote(a) for a in ["cdseg", *sys.argv[1:]]) +
               "\n# then a run of the compiled pipeline: its parameters (seeds, train_options, ...) are in the run's details")
    path = compile_experiment(grid, cfg.compile_pipeline, options=cfg.build.to_options(), parallelism=cfg.parallelism,
                              command=command, dataset=cfg.dataset_name, dataset_def=cfg.dataset_def or None)
    for g in step0_groups(grid):
        shared = f" (step 0 of {g.provider}, shared)" if len(g.members) > 1 else ""
        print(f"{g.task}: {', '.join(g.members)}{shared}", file=sys.stderr)
    print(path)
    print(f"submit: kfp --endpoint URL run create --experiment-name cdseg --package-file {shlex.quote(path)} "
          "source=RELEASE_URI [seeds='[0,1,2]' ...], or upload it in the Kubeflow Pipelines UI", file=sys.stderr)
    return 0


def _run(cfg: ExperimentCommand) -> int:
    from cdseg.experiment import run_experiment

    if cfg.compile_pipeline:
        return _compile(cfg)
    result = run_experiment(cfg.grid())
    print(f"steps: {result['steps']} in the grid, {result['ran']} run now, {result['skipped']} done already")
    print(f"report: {result['report']}")
    return 0


COMMAND = Command(
    name="experiment",
    help="a grid of tasks x methods x seeds, with statistics over seeds",
    config=ExperimentCommand,
    run=_run,
    description="Train and test every step of every cell of the grid (--tasks x --methods x --seeds) on a prepared "
    "dataset, then write <output>/report/report.md: old / new / all mIoU per step and method as mean ± sd with a "
    "Student-t interval over seeds, paired differences between methods (same seed) with the paired t-test and the "
    "sign test, per-class forgetting with paired differences of the drops, and miou.png. Each cell is a run "
    "folder as cdseg train / test write it: finished steps are skipped and an interrupted one resumes, so "
    "rerunning the same command finishes the grid. "
    "Methods whose step 0 is identical share one step-0 model per task and seed (ft, uft and mib; mib-cd and "
    "ft-cd, whose step 0 adds the invariance term). Choose settings with --split val; report --split test. "
    "With --compile-pipeline FILE the same grid is written as one Kubeflow pipeline instead (a ParallelFor over the "
    "seeds per task and step-0 group, the same report at the end).",
    epilog="examples:\n"
    "  cdseg experiment --dataset data/prepared --methods ft,mib,mib-cd --seeds 0,1,2,3,4 --tasks 222a,321 \\\n"
    "      --train-options '{\"model.encoder\": \"resnet18\", \"model.pretrained\": false, \"trainer.max_iters\": 320}'\n"
    "  cdseg experiment ... --methods mib-cd,mib-cd+feature-dropout \\\n"
    "      --variants '{\"mib-cd+feature-dropout\": {\"model.feature_dropout\": true}}'\n"
    "  cdseg experiment ... --workers 2    (two runs at once, each in its own process)\n"
    "  cdseg experiment --compile-pipeline experiment.yaml --tasks 222a --methods ft,mib,mib-cd --seeds 0,1,2,3,4",
)
