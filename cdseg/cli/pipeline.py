"""`cdseg pipeline compile | run --local | submit`: the Kubeflow pipeline from the command line.

`pipelines` (and kfp) are imported inside the functions, so `cdseg --help` stays light.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from pydantic import Field, model_validator

from cdseg.cli.command import Command
from cdseg.config import Section
from cdseg.errors import ConfigError
from cdseg.train.methods import method_names


class BuildSection(Section):
    """Compile-time choices of the pipeline (fixed in the YAML); the rest are run parameters."""

    retries: int = Field(1, ge=0, description="retries of every task (a preempted node restarts the step)")
    backoff: str = Field("60s", description="delay before the first retry (doubles each time; duration)")
    pvc_name: str = Field("", description="PVC mounted in every task and every PyTorchJob pod (for a PVC workdir)")
    pvc_mount: str = Field("/mnt/cdseg", description="where pvc_name is mounted (path)")
    caching: bool = Field(True, description="KFP execution caching of the tasks")
    s3_secret: str = Field("cdseg-s3", description="Secret whose AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY every task "
                           "gets as env, if it exists ('' for none)")
    config_map: str = Field("cdseg-defaults", description="ConfigMap whose CDSEG_STORAGE__ENDPOINT_URL / "
                            "CDSEG_STORAGE__REGION every task gets as env, if present ('' for none)")

    def to_options(self) -> Any:
        """`pipelines.BuildOptions` with these values."""
        from pipelines import BuildOptions

        return BuildOptions(**self.model_dump())


class CompileConfig(Section):
    """`cdseg pipeline compile`."""

    task: str = Field("", description="task to compile (a task of --dataset or a task YAML); see also --all")
    dataset: str = Field("potsdam", description="shipped dataset whose task it is (docs/data.md lists them): the "
                                                "task's step count is the pipeline's")
    dataset_def: str = Field("", description="YAML definition of your own dataset (its tasks), instead of --dataset")
    all: bool = Field(False, description="compile every checked-in task (the ISPRS offline, 222a, 321, 6s)")
    output: str = Field("", description="folder for <task>.yaml (default: the package's pipelines/compiled/)")
    build: BuildSection = Field(default_factory=BuildSection)

    @model_validator(mode="after")
    def _one(self) -> CompileConfig:
        if bool(self.task) == self.all:
            raise ValueError("give exactly one of --task NAME and --all")
        return self


class RunParams(Section):
    """What a pipeline run is given: the task, the release and the pipeline parameters."""

    task: str = Field("222a", description="task of --dataset (e.g. offline, 222a, 321, 6s for ISPRS), or a task YAML")
    dataset: str = Field("potsdam", description="shipped dataset whose task it is (docs/data.md lists them)")
    dataset_def: str = Field("", description="YAML definition of your own dataset, instead of --dataset (also "
                                             "passed to the prepare task)")
    source: str = Field("", description="the release folder or URI (cdseg synth writes one)")
    method: str = Field("mib-cd", description=f"method recipe: {', '.join(method_names())}")
    params: dict[str, Any] = Field(default_factory=dict, description="other pipeline parameters (JSON), e.g. "
                                   "'{\"epochs\": 2, \"train_options\": {\"trainer.max_iters\": 50}}'; "
                                   "docs/pipelines.md lists them")

    def arguments(self) -> dict[str, Any]:
        """The pipeline arguments (parameters that moved into config / train_options are moved there; config is
        validated here, before anything runs)."""
        from pipelines.params import migrate_arguments

        if not self.source:
            raise ConfigError("--source is empty; give the release folder or URI (cdseg synth writes one)")
        for key in ("source", "method"):
            if key in self.params:
                raise ConfigError(f"--params sets {key!r}; use --{key} instead")
        args = migrate_arguments({"source": self.source, "method": self.method, **self.params})
        if self.dataset_def:
            config = dict(args.get("config", {}))
            config["prepare_options"] = {**config.get("prepare_options", {}), "dataset_def": self.dataset_def}
            args["config"] = config
        return args


class RunConfig(RunParams):
    """`cdseg pipeline run --local`."""

    local: bool = Field(False, description="run with KFP's local runner (the only way `run` works; "
                        "use `cdseg pipeline submit` for a cluster)")
    output: str = Field("outputs/pipeline", description="folder of the run: pipeline_root (every artifact), "
                        "pipeline.log, and the report")
    caching: bool = Field(True, description="reuse results of identical earlier tasks (cache beside --output)")
    echo: bool = Field(False, description="print every component's output (else it goes to pipeline.log)")
    build: BuildSection = Field(default_factory=lambda: BuildSection.model_validate({"retries": 0}))


class SubmitConfig(RunParams):
    """`cdseg pipeline submit`."""

    host: str = Field("", description="Kubeflow Pipelines endpoint URL, e.g. http://localhost:8080")
    package: str = Field("", description="compiled pipeline YAML (default: pipelines/compiled/<task>.yaml, or "
                         "compiled now for another task)")
    experiment: str = Field("cdseg", description="KFP experiment name (created if missing)")
    run_name: str = Field("", description="run name (default: <task>-<method>-<UTC time>)")
    namespace: str = Field("", description="Kubeflow profile namespace (multi-user installs)")
    token: str = Field("", description="bearer token for the endpoint (default: none / the SDK's own)")
    caching: bool | None = Field(None, description="override the compiled caching default for this run")
    wait: int = Field(0, ge=0, description="wait up to this many seconds for the run to finish (0: return at once)")

    @model_validator(mode="after")
    def _host(self) -> SubmitConfig:
        if not self.host:
            raise ValueError("--host is required: the Kubeflow Pipelines endpoint URL (e.g. http://localhost:8080)")
        return self


def _compile(cfg: CompileConfig) -> int:
    from pipelines.compile import COMPILED_DIR, compile_all, compile_task

    out = cfg.output or COMPILED_DIR
    paths = compile_all(out, options=cfg.build.to_options()) if cfg.all else \
        [compile_task(cfg.task, out, options=cfg.build.to_options(), dataset=cfg.dataset,
                      dataset_def=cfg.dataset_def or None)]
    for path in paths:
        print(path)
    return 0


def _run(cfg: RunConfig) -> int:
    if not cfg.local:
        raise ConfigError("cdseg pipeline run needs --local (KFP's local runner); to run on a cluster use "
                          "cdseg pipeline submit --host URL")
    from cdseg.demo import print_table
    from pipelines.local import run_local

    def progress(line: str) -> None:
        print(f"  {line}", file=sys.stderr, flush=True)

    run = run_local(cfg.task, arguments=cfg.arguments(), output=cfg.output, build=cfg.build.to_options(),
                    caching=cfg.caching, progress=progress, echo=cfg.echo, dataset=cfg.dataset,
                    dataset_def=cfg.dataset_def or None)
    print_table(run.metrics)
    print(f"report: {run.report_dir / 'report.html'}\nartifacts: {run.run_dir}\nlog: {run.log_file}")
    return 0


def _submit(cfg: SubmitConfig) -> int:
    import time
    from pathlib import Path

    from pipelines.compile import COMPILED_DIR, compile_task, compiled_name
    from pipelines.submit import kfp_cli_equivalent, submit

    package = Path(cfg.package) if cfg.package else COMPILED_DIR / compiled_name(cfg.task, cfg.dataset)
    if not package.is_file():
        if cfg.package:
            raise ConfigError(f"--package {cfg.package} does not exist; compile one with cdseg pipeline compile")
        import tempfile

        package = compile_task(cfg.task, tempfile.mkdtemp(prefix="cdseg-pipeline-"), dataset=cfg.dataset,
                               dataset_def=cfg.dataset_def or None)
    run_name = cfg.run_name or f"{cfg.task}-{cfg.method}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    args = cfg.arguments()
    result = submit(package, host=cfg.host, arguments=args, experiment=cfg.experiment, run_name=run_name,
                    namespace=cfg.namespace or None, enable_caching=cfg.caching, existing_token=cfg.token or None,
                    wait_s=cfg.wait)
    print(json.dumps({"run_id": result.run_id, "run_name": run_name, "url": result.url}))
    print("same with the KFP CLI: " + kfp_cli_equivalent(package, host=cfg.host, arguments=args,
                                                          experiment=cfg.experiment, run_name=run_name),
          file=sys.stderr)
    return 0


COMMANDS = {
    "pipeline compile": Command(
        name="pipeline compile", help="compile the Kubeflow pipeline for a task to YAML", config=CompileConfig,
        run=_compile,
        description="Compile the pipeline of --task (or of every shipped task with --all) to <task>.yaml. "
        "The step count is fixed per task at compile time; method, hyper-parameters, image and launch mode are "
        "run parameters. The checked-in pipelines/compiled/*.yaml come from `cdseg pipeline compile --all`.",
    ),
    "pipeline run": Command(
        name="pipeline run", help="run the Kubeflow pipeline locally (KFP local runner)", config=RunConfig, run=_run,
        description="Run the pipeline of --task with KFP's local runner: every task is a subprocess of this "
        "Python, artifacts go under --output/pipeline_root. Prints the per-step table and the report's path.",
        epilog="example:\n  cdseg pipeline run --local --task 222a --source data/synth --method mib-cd \\\n"
        "      --params '{\"epochs\": 2, \"train_options\": {\"trainer.limit_batches\": 10}}'",
    ),
    "pipeline submit": Command(
        name="pipeline submit", help="submit the Kubeflow pipeline to a KFP endpoint", config=SubmitConfig,
        run=_submit,
        description="Create a run of the compiled pipeline on a Kubeflow Pipelines endpoint (kfp.Client) and print "
        "its id, plus the equivalent `kfp run create` command.",
        epilog="example:\n  cdseg pipeline submit --host http://localhost:8080 --task 222a --method mib-cd \\\n"
        "      --source s3://cdseg/potsdam --params '{\"launch_mode\": \"pytorchjob\", "
        "\"workdir\": \"s3://cdseg/work\", \"gpus_per_node\": 1, \"config\": {\"queue\": \"gpu\"}}'",
    ),
}
