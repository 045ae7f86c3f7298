"""`make_experiment_pipeline(cfg)`: a `cdseg experiment` grid as one Kubeflow pipeline.

    configure, prepare
    for each task, for each step-0 group (methods whose step 0 trains identically):
        ParallelFor over the seeds (a run parameter):
            train(0) of the group -> evaluate(0)
            for each method of the group: train(1, prev = train(0)) -> evaluate(1) -> ... -> cell rows
        gather the loop's cells (dsl.Collected), after the loops before it
    report (cdseg.experiment.report, as the local runner writes it)
    all of it inside one exit handler, whose task deletes every job of the run however it ends (clean up jobs)

Fixed at compile time, because they shape the DAG: the tasks (their step counts), the methods and variants
(which train tasks exist and which of them share a step-0 model) and the loops' parallelism. Run parameters:
the seeds, the training and test options every run gets, the source, the image and where training runs.
"""

import re
from dataclasses import dataclass
from typing import Any

from kfp import dsl

from components.evaluate import evaluate
from components.experiment import experiment_cell, experiment_gather, experiment_report
from components.prepare import prepare
from components.settings import DEFAULT_IMAGE
from components.train import train_step
from pipelines.factory import (
    REPORT_CPU,
    REPORT_MEMORY,
    BuildOptions,
    cleanup_exit_handler,
    configure_task,
    job_volumes,
    num_steps_of,
    task_settings,
    train_placement,
    with_param_docs,
)

#: descriptions of the experiment pipeline's own run parameters (the shared ones: pipelines.factory.PARAM_DOCS)
EXPERIMENT_DOCS: dict[str, str] = {
    "seeds": (
        "training seeds, e.g. [0, 1, 2, 3, 4]: every method runs once per seed (one ParallelFor iteration "
        "per seed); paired comparisons use the seeds both methods finished. Each seed once."
    ),
    "train_options": (
        "cdseg train options of every run as dotted keys, e.g. {\"trainer.max_iters\": 320} (default: the "
        "compiled --train-options); the compiled variants' options win over them."
    ),
    "test_options": (
        "cdseg test options of every evaluation as dotted keys (default: the compiled --split and --eval "
        "options), e.g. {\"split\": \"val\"} to choose settings on validation scenes."
    ),
}

#: the dataset stand-in used to resolve the runs' options at compile time (the pipeline prepares its own)
COMPILE_DATASET = "pipeline://prepare"


@dataclass(frozen=True)
class Step0Group:
    """Methods of one task whose step 0 is identical: `provider` trains it once per seed, all start from it."""

    task: str
    provider: str
    members: tuple[str, ...]


def step0_groups(cfg: Any) -> list[Step0Group]:
    """Per task, the methods grouped by their step 0 (`cdseg.train.config.step0_fingerprint`), in grid order.

    The grouping is the local runner's (`step0_providers`); it does not depend on the seed, so the first
    seed's stands for every seed the run is given.
    """
    from cdseg.experiment.grid import Cell, step0_providers

    providers = step0_providers(cfg.model_copy(update={"dataset": cfg.dataset or COMPILE_DATASET}))
    groups: list[Step0Group] = []
    for task in cfg.tasks:
        members: dict[str, list[str]] = {}
        for name in cfg.methods:
            members.setdefault(providers[Cell(task, name, cfg.seeds[0])].name, []).append(name)
        groups += [Step0Group(task, provider, tuple(names)) for provider, names in members.items()]
    return groups


def test_option_defaults(cfg: Any) -> dict[str, Any]:
    """The grid's `cdseg test` options (split and the non-default eval options), as dotted keys."""
    return {"split": cfg.split, **{f"eval.{k}": v for k, v in cfg.eval.model_dump(exclude_defaults=True).items()}}


def experiment_name(tasks: list[str]) -> str:
    """`cdseg-experiment-<tasks>`, DNS-safe."""
    stem = "-".join(re.sub(r"\.ya?ml$", "", t.rsplit("/", 1)[-1]) for t in tasks)
    slug = re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-")
    return f"cdseg-experiment-{slug}"[:63].rstrip("-")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def make_experiment_pipeline(cfg: Any, *, options: BuildOptions | None = None, parallelism: int = 0,
                             command: str = "", dataset: str = "potsdam", dataset_def: str | None = None) -> Any:
    """Build the pipeline of the grid `cfg` (an ExperimentConfig); `parallelism` caps each loop's concurrent seeds.
    Without a prepared dataset in `cfg`, the tasks are those of `dataset` (a shipped definition) or `dataset_def`."""
    from cdseg.errors import ConfigError
    from cdseg.experiment.grid import num_steps

    opts = options or BuildOptions()
    if parallelism < 0:
        raise ConfigError(f"--parallelism {parallelism} must be >= 0 (0: every seed of a loop at once)")
    if opts.import_step0:
        raise ConfigError("import_step0 is not supported by the experiment pipeline: every cell trains its step 0")
    # compiled without a prepared dataset (the pipeline prepares its own): the tasks are the definition's
    def steps_of(task: str) -> int:
        if cfg.dataset:
            return int(num_steps(cfg, task))
        total = num_steps_of(task, dataset, dataset_def)
        return min(total, cfg.steps) if cfg.steps else total

    steps = {task: steps_of(task) for task in cfg.tasks}
    groups = step0_groups(cfg)
    seeds_default = list(cfg.seeds)
    train_default = dict(cfg.train_options)
    test_default = test_option_defaults(cfg)
    names = list(cfg.methods)
    tasks = list(cfg.tasks)
    shape = "; ".join(f"{g.task}: {'/'.join(g.members)} from {g.provider}'s step 0" for g in groups)

    def cdseg_experiment(
        source: str,
        seeds: list = seeds_default,
        train_options: dict = train_default,
        test_options: dict = test_default,
        image: str = DEFAULT_IMAGE,
        launch_mode: str = "auto",
        nproc: int = 1,
        num_workers: int = 0,
        gpus_per_node: int = 0,
        accelerator_type: str = "nvidia.com/gpu",
        accelerator_count: int = 0,
        workdir: str = "",
        config: dict = {},  # noqa: B006
    ) -> None:
        # the docstring (the UI's parameter descriptions) is built from PARAM_DOCS and EXPERIMENT_DOCS
        # Every task runs inside the exit handler (pipelines.factory.cleanup_exit_handler; KFP also wants a
        # dsl.Collected fan-in in the handler of its ParallelFor): its exit task deletes every job labelled with this
        # pipeline run, whichever cell made it. So the pipeline has no output of its own (KFP takes those only from
        # the top level): the report is the report task's artifact `report_dir`.
        with cleanup_exit_handler(opts, launch_mode=launch_mode, config=config, image=image, name="cells-and-report"):
            run = configure_task(opts, config=config, launch_mode=launch_mode, accelerator_type=accelerator_type,
                                 accelerator_count=accelerator_count, image=image)
            conf = run.outputs  # the validated config options (cfg is the grid)

            def common(t: Any, name: str, cpu: Any = REPORT_CPU, memory: Any = REPORT_MEMORY,
                       task_image: Any = image) -> Any:
                return task_settings(t, opts, name=name, image=task_image, cpu=cpu, memory=memory)

            def cell_run_id(task: str, name: str, seed: Any) -> str:
                # cell-unique: job names, job storage (workdir/runs/<run id>/) and pushed metrics must not collide
                return f"{dsl.PIPELINE_JOB_ID_PLACEHOLDER}-{_slug(task)}-{_slug(name)}-s{seed}"

            def train(task: str, name: str, step: int, seed: Any, prev: Any, history: Any) -> Any:
                """Train and evaluate one step; returns its model and the evaluations' history so far."""
                run_id = cell_run_id(task, name, seed)
                kwargs: dict[str, Any] = {"prev_model": prev} if prev is not None else {}
                tr = train_step(
                    task=task, step=step, method=cfg.method_of(name), data=data,
                    options={**cfg.variants.get(name, {}), "seed": seed}, hparams=train_options,
                    launch_mode=launch_mode, workdir=workdir, run_id=run_id,
                    pipeline_run=dsl.PIPELINE_JOB_ID_PLACEHOLDER,  # the label all cells' jobs share: the exit task's
                    num_workers=num_workers, nproc_per_node=nproc, image=image, namespace=conf["namespace"],
                    gpus=gpus_per_node, cpu=conf["job_cpu"], memory=conf["job_memory"],
                    node_selector=conf["node_selector"], tolerations=conf["tolerations"], volumes=job_volumes(opts),
                    queue=conf["queue"], priority_class=conf["priority_class"], timeout=conf["job_timeout_s"],
                    pending_timeout=conf["pending_timeout_s"], **kwargs,
                )
                common(tr, f"train {task} {name} step {step}", conf["train_task_cpu"], conf["train_task_memory"],
                       conf["train_task_image"])
                train_placement(tr, run)
                earlier: dict[str, Any] = {"earlier": history} if history is not None else {}
                ev = evaluate(data=data, model=tr.outputs["model"], options=test_options, method=name, run_id=run_id,
                              **earlier)
                common(ev, f"evaluate {task} {name} step {step}", conf["evaluate_cpu"], conf["evaluate_memory"])
                return tr.outputs["model"], ev.outputs["history"]

            prep = common(prepare(source=source, options=conf["prepare_options"], output_uri=conf["data_uri"]),
                          "prepare", conf["prepare_cpu"], conf["prepare_memory"])
            data = prep.outputs["dataset"]
            gathered = None
            for i, group in enumerate(groups):
                label = f"{group.task} {'/'.join(group.members)}"
                with dsl.ParallelFor(seeds, parallelism=parallelism) as seed:  # no name=: it breaks dsl.Collected
                    model0, history0 = train(group.task, group.provider, 0, seed, None, None)
                    rows = None
                    for name in group.members:
                        prev, history = model0, history0  # every member's evaluations continue step 0's history
                        for k in range(1, steps[group.task]):
                            prev, history = train(group.task, name, k, seed, prev, history)
                        more: dict[str, Any] = {"earlier": rows} if rows is not None else {}
                        cell = experiment_cell(task=group.task, name=name, seed=seed, step0_from=group.provider,
                                               run_id=cell_run_id(group.task, name, seed), history=history, **more)
                        rows = common(cell, f"rows {group.task} {name}").outputs["rows"]
                more = {"earlier": gathered} if gathered is not None else {}
                if i < len(groups) - 1:
                    gather = common(experiment_gather(cells=dsl.Collected(rows), **more), f"gather {label}")
                    gathered = gather.outputs["rows"]
                else:
                    common(experiment_report(cells=dsl.Collected(rows), tasks=tasks, names=names,
                                             confidence=cfg.confidence, command=command,
                                             keep_pushed_metrics=conf["keep_pushed_metrics"], **more), "report")

    with_param_docs(cdseg_experiment, "Every cell of the grid (task x method or variant x seed), trained step by "
                    "step, then one report.", EXPERIMENT_DOCS)
    return drop_leaked_loop_items(dsl.pipeline(
        name=experiment_name(tasks),
        description=f"cdseg experiment: tasks {', '.join(tasks)} x methods {', '.join(names)} x the seeds parameter; "
                    f"step-0 groups {shape}; one report with statistics over seeds",
    )(cdseg_experiment))


def drop_leaked_loop_items(pipeline: Any) -> Any:
    """Remove the loop-item inputs kfp's compiler wrongly gives the exit handler's sub-DAG; returns `pipeline`.

    A ParallelFor's item used in an f-string (the cells' run ids) is taken for a pipeline parameter, and every group
    around the loop up to the root declares it as an input (kfp 2.17 and earlier; kubeflow/pipelines issues 12390
    and 13273). At the top level that did no harm; inside dsl.ExitHandler the handler's task asks the root for an
    input it does not have (KFP's local runner: "Parent pipeline input argument 'seeds-loop-item' not found"; the
    backend fails the run). Nothing in the sub-DAG reads it (the loop task binds the item itself), so it goes. An
    unbound input that something does read is a real error: compiling fails, naming it.
    """
    spec = pipeline.pipeline_spec
    changed = True
    while changed:  # nested groups: a parent's input dropped may leave its children's unbound
        changed = False
        for parent in [spec.root, *(c for c in spec.components.values() if c.HasField("dag"))]:
            for task in parent.dag.tasks.values():
                for key, value in list(task.inputs.parameters.items()):
                    given = value.component_input_parameter
                    if value.WhichOneof("kind") != "component_input_parameter" or \
                            given in parent.input_definitions.parameters:
                        continue
                    child = spec.components[task.component_ref.name]
                    read = "\n".join(line for line in str(child.dag).splitlines() if "item_input:" not in line)
                    if "-loop-item" not in given or key in read:
                        raise RuntimeError(f"compiled pipeline: task {task.task_info.name!r} reads input {given!r}, "
                                           "which its parent does not have; a kfp compiler bug this code does not "
                                           "work around (see drop_leaked_loop_items)")
                    del task.inputs.parameters[key]
                    del child.input_definitions.parameters[key]
                    changed = True
    return pipeline


def compile_experiment(cfg: Any, path: str, *, options: BuildOptions | None = None, parallelism: int = 0,
                       command: str = "", dataset: str = "potsdam", dataset_def: str | None = None) -> str:
    """Compile the grid's pipeline to `path` (written atomically); returns the path."""
    from pathlib import Path

    from pipelines.compile import write_compiled

    pipeline = make_experiment_pipeline(cfg, options=options, parallelism=parallelism, command=command,
                                        dataset=dataset, dataset_def=dataset_def)
    return str(write_compiled(pipeline, Path(path)))
