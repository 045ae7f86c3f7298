"""`make_pipeline(task)`: prepare -> train(0) -> evaluate(0) -> train(1, prev = train(0)) -> ... -> report."""

import inspect
import re
from dataclasses import dataclass, field
from typing import Any

from kfp import dsl, kubernetes
from kfp.dsl import Model
from kfp.dsl.pipeline_channel import PipelineChannel

from components import DEFAULT_IMAGE, RECIPE_DEFAULT
from components.cleanup import cleanup
from components.configure import configure
from components.evaluate import evaluate
from components.prepare import prepare
from components.report import report
from components.run_config import CONFIG_KEYS
from components.train import train_step

#: the tasks whose compiled pipeline is checked in, as (dataset, task): pipelines/compiled/<task>.yaml (the ISPRS
#: tasks, shared by Potsdam and Vaihingen). Any other dataset's task compiles on demand
#: (`cdseg pipeline compile --dataset loveda --task 4-3` -> loveda-4-3.yaml).
SHIPPED_TASKS: tuple[tuple[str, str], ...] = (
    ("potsdam", "offline"), ("potsdam", "222a"), ("potsdam", "321"), ("potsdam", "6s"),
)

#: pipeline parameter -> TrainConfig option it sets; its default, components.RECIPE_DEFAULT's value, leaves the
#: option to the method recipe (a UI run trains the recipe's budget unless the form says otherwise)
HPARAMS: dict[str, str] = {
    "epochs": "trainer.epochs",
    "batch_size": "trainer.batch_size",
    "lr": "optimizer.lr",
}

#: credentials and storage settings every task gets as environment variables (k8s/base: Secret cdseg-s3,
#: ConfigMap cdseg-defaults), so s3:// URIs work in the component pods as in the trainer pods
#: the report task only reads metrics.json files and draws a few plots
REPORT_CPU, REPORT_MEMORY = "500m", "1Gi"
#: the configure task only validates the config parameter
CONFIGURE_CPU, CONFIGURE_MEMORY = "200m", "512Mi"

S3_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
CONFIG_MAP_KEYS = ("CDSEG_STORAGE__ENDPOINT_URL", "CDSEG_STORAGE__REGION", "CDSEG_METRICS__PUSHGATEWAY")


@dataclass(frozen=True)
class BuildOptions:
    """Compile-time choices (KFP needs these fixed in the YAML); everything else is a run parameter."""

    retries: int = 1                      # retries of every task (train: a preempted node; the step restarts)
    backoff: str = "60s"                  # first retry delay (doubles each time)
    pvc_name: str = ""                    # a PVC mounted in every task (and passed to the training jobs) ...
    pvc_mount: str = "/mnt/cdseg"         # ... at this path; set workdir under it
    import_step0: bool = False            # step 0's checkpoint is imported (parameter step0_model), not trained
    caching: bool = True                  # KFP execution caching of the tasks
    s3_secret: str = "cdseg-s3"           # Secret with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (optional) ...
    config_map: str = "cdseg-defaults"    # ... and the ConfigMap of CDSEG_STORAGE__* defaults (optional), as env
    # pod labels on every task; part-of=cdseg is what the Pushgateway's NetworkPolicy admits
    extra_labels: dict[str, str] = field(default_factory=lambda: {"app.kubernetes.io/part-of": "cdseg"})

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError("retries must be >= 0")


#: descriptions of the run parameters the task pipeline and the experiment pipeline share (the UI shows them)
PARAM_DOCS: dict[str, str] = {
    "source": "the release (zips or folders) or generated scenes to prepare: a path or s3:// URI.",
    "image": (
        "container image of the configure, prepare, evaluate, report and clean-up tasks and of the training jobs."
    ),
    "launch_mode": (
        "where each step trains: auto (a Kubeflow Trainer TrainJob, else a PyTorchJob, whichever the "
        "cluster serves), trainjob, pytorchjob, or local (in the train task's own pod: then set "
        "accelerator_count for GPUs, and config's train_task_cpu / train_task_memory / train_task_image)."
    ),
    "nproc": "training processes per node (torchrun), one per GPU.",
    "num_workers": "training job nodes besides the first (job modes).",
    "gpus_per_node": "GPUs per training job pod (0: CPU with gloo).",
    "workdir": "storage the jobs share with the pipeline: an s3:// prefix or a path on a mounted PVC.",
    "accelerator_type": "accelerator resource of the train tasks' own pods (launch_mode=local), e.g. nvidia.com/gpu.",
    "accelerator_count": (
        "accelerators per train task pod (launch_mode=local; 0: none, and no accelerator limit is set). The "
        "jobs' pods take gpus_per_node instead."
    ),
    "config": (
        "the rarely-changed options, one JSON object; every key is optional, e.g. {\"prepare_cpu\": \"8\", "
        "\"node_selector\": {\"pool\": \"gpu\"}}. Keys: " + ", ".join(CONFIG_KEYS) + " (docs/pipelines.md, "
        "The config parameter). The run's first task checks them."
    ),
}

#: descriptions of the task pipeline's own run parameters
PIPELINE_DOCS: dict[str, str] = {
    "method": "training recipe, one of `cdseg train --help`'s methods (joint: the offline upper bound).",
    "epochs": (
        "training epochs per step (0: the recipe's, 100 with early stopping; train_options may end it "
        "sooner, e.g. {\"trainer.max_iters\": 2000})."
    ),
    "batch_size": "images per iteration and process (0: the recipe's, 8).",
    "lr": "the optimizer's peak learning rate (0: the recipe's, 0.001).",
    "train_options": (
        "other cdseg train options as dotted keys, e.g. {\"trainer.max_iters\": 320, \"trainer.patience\": 10, "
        "\"data.crop_size\": 256, \"in_channels\": 4}."
    ),
    "test_options": "other cdseg test options as dotted keys, e.g. {\"eval.tta\": true}.",
    "step0_model": "the step-0 checkpoint URI imported instead of training step 0.",
}


def with_param_docs(func: Any, summary: str, own: dict[str, str]) -> Any:
    """Give a pipeline function its docstring: `summary` and an Args entry per parameter (KFP reads the
    descriptions from it), from `own` and the shared PARAM_DOCS; a parameter without one is a bug."""
    names = list(inspect.signature(func).parameters)
    docs = {**PARAM_DOCS, **own}
    missing = [n for n in names if n not in docs]
    if missing:
        raise RuntimeError(f"pipeline parameters {missing} have no description; add them to PARAM_DOCS or its own")
    func.__doc__ = summary + "\n\nArgs:\n" + "\n".join(f"    {n}: {docs[n]}" for n in names)
    return func


def task_settings(t: Any, opts: BuildOptions, *, name: str, image: Any, cpu: Any, memory: Any) -> Any:
    """What every task of cdseg's pipelines gets: name, image, requests = limits, retries, caching, the PVC,
    the optional S3 Secret and defaults ConfigMap as env, and the pod labels."""
    t.set_display_name(name)
    t.set_container_image(image)
    t.set_cpu_request(cpu).set_cpu_limit(cpu).set_memory_request(memory).set_memory_limit(memory)
    # kfp 2.17's resource setters do not record a parameter as an input of the task: inside a ParallelFor
    # the task would then read a loop input the compiler never declared ("Parent pipeline input argument
    # 'pipelinechannel--...' not found"); set_container_image records its own
    _register(t, cpu, memory)
    if opts.retries:
        t.set_retry(num_retries=opts.retries, backoff_duration=opts.backoff, backoff_factor=2.0)
    if not opts.caching:
        t.set_caching_options(enable_caching=False)
    if opts.pvc_name:
        kubernetes.mount_pvc(t, pvc_name=opts.pvc_name, mount_path=opts.pvc_mount)
    if opts.s3_secret:
        kubernetes.use_secret_as_env(t, opts.s3_secret, {k: k for k in S3_SECRET_KEYS}, optional=True)
    if opts.config_map:
        kubernetes.use_config_map_as_env(t, opts.config_map, {k: k for k in CONFIG_MAP_KEYS}, optional=True)
    for key, value in opts.extra_labels.items():
        kubernetes.add_pod_label(t, key, value)
    return t


def configure_task(opts: BuildOptions, *, config: Any, launch_mode: Any, accelerator_type: Any,
                   accelerator_count: Any, image: Any) -> Any:
    """The run's first task: validates `config` (one line and the fix when bad; nothing else starts) and outputs
    each option for the tasks and pod settings that use it (components.run_config.OUTPUTS)."""
    t = configure(config=config, launch_mode=launch_mode, accelerator_type=accelerator_type,
                  accelerator_count=accelerator_count)
    return task_settings(t, opts, name="configure", image=image, cpu=CONFIGURE_CPU, memory=CONFIGURE_MEMORY)


def cleanup_exit_handler(opts: BuildOptions, *, launch_mode: Any, config: Any, image: Any,
                         name: str = "train-and-evaluate") -> dsl.ExitHandler:
    """The `dsl.ExitHandler` every task of cdseg's pipelines runs inside: its exit task, `cleanup`, deletes any job
    still labelled with this pipeline run, however the tasks inside end.

    It covers a train task whose launcher was killed (SIGKILL, a lost node) and so could not delete its own job.
    KFP lets an exit task depend on no task, so it reads the jobs' namespace from the `config` parameter itself (not
    from the configure task's outputs) and runs in the run's image, as configure does; never cached (a cached
    "nothing left" would skip the deletion). KFP forbids a task outside the handler to consume one inside, and takes
    pipeline outputs only from the top level: the pipeline has none, its report is the report task's artifact.
    """
    exit_task = cleanup(run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, launch_mode=launch_mode, config=config)
    task_settings(exit_task, opts, name="clean up jobs", image=image, cpu=REPORT_CPU, memory=REPORT_MEMORY)
    exit_task.set_caching_options(enable_caching=False)
    return dsl.ExitHandler(exit_task, name=name)


def train_placement(t: Any, settings: Any) -> Any:
    """A train task's accelerators (its own pod, launch_mode=local) and the placement its jobs share.

    The accelerator type and count come from the configure task as strings, both empty without accelerators:
    the KFP backend resolves a placeholder to the parameter's *string* value and skips the accelerator when the
    type is empty, so a CPU run sets no accelerator limit (an int parameter would resolve to "" even for 1).
    """
    acc_type, acc_count = settings.outputs["accelerator_type"], settings.outputs["accelerator_count"]
    t.set_accelerator_type(acc_type).set_accelerator_limit(acc_count)
    _register(t, acc_type, acc_count)
    kubernetes.add_node_selector_json(t, settings.outputs["node_selector"])
    kubernetes.add_toleration_json(t, settings.outputs["tolerations"])
    return t


def job_volumes(opts: BuildOptions) -> list[dict[str, str]]:
    """The train component's `volumes` (a `cdseg.launch.VolumeMount` list): the PVC every task mounts, if any, so that
    a PVC workdir is the same path in the jobs' pods."""
    return [{"claim": opts.pvc_name, "mount_path": opts.pvc_mount}] if opts.pvc_name else []


def _register(t: Any, *values: Any) -> None:
    channels = [v for v in values if isinstance(v, PipelineChannel)]
    if channels:
        t.register_pipeline_channels(channels)


def num_steps_of(task: str, dataset: str = "potsdam", dataset_def: str | None = None) -> int:
    """The task's step count: a task of the dataset's definition (cdseg.data), or a task YAML file over its classes."""
    from cdseg.data.source import get_source
    from cdseg.tasks import get_task

    fields = get_source(dataset, dataset_def).definition.manifest_fields()
    return int(get_task(task, fields).num_steps)


def hparam_defaults() -> dict[str, Any]:
    """Each hyper-parameter's default: the value that leaves it to the method recipe (components.RECIPE_DEFAULT)."""
    return {name: RECIPE_DEFAULT[path] for name, path in HPARAMS.items()}


def pipeline_name(task: str) -> str:
    """`cdseg-<task>`, DNS-safe (task YAML paths become their stem)."""
    stem = re.sub(r"\.ya?ml$", "", task.rsplit("/", 1)[-1])
    return "cdseg-" + (re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-") or "task")


def make_pipeline(task: str, *, num_steps: int | None = None, options: BuildOptions | None = None,
                  dataset: str = "potsdam", dataset_def: str | None = None) -> Any:
    """Build the pipeline of `task` of `dataset` (steps fixed now: the task's; method, hyper-parameters, image and
    launch mode at run time)."""
    opts = options or BuildOptions()
    steps = num_steps if num_steps is not None else num_steps_of(task, dataset, dataset_def)
    if steps < 1:
        raise ValueError(f"num_steps={steps} must be at least 1")
    hp = hparam_defaults()

    def cdseg_pipeline(
        source: str,
        method: str = "mib-cd",
        epochs: int = hp["epochs"],
        batch_size: int = hp["batch_size"],
        lr: float = hp["lr"],
        train_options: dict = {},  # noqa: B006
        test_options: dict = {},  # noqa: B006
        image: str = DEFAULT_IMAGE,
        launch_mode: str = "auto",
        nproc: int = 1,
        num_workers: int = 0,
        gpus_per_node: int = 0,
        accelerator_type: str = "nvidia.com/gpu",
        accelerator_count: int = 0,
        workdir: str = "",
        config: dict = {},  # noqa: B006
        step0_model: str = "",  # last: KFP passes the parameters by position, and it is dropped unless used
    ) -> None:
        # the docstring (the UI's parameter descriptions) is built from PARAM_DOCS and PIPELINE_DOCS below
        hparams = {"trainer.epochs": epochs, "trainer.batch_size": batch_size, "optimizer.lr": lr}

        def common(t: Any, name: str, cpu: Any, memory: Any, task_image: Any = image) -> Any:
            return task_settings(t, opts, name=name, image=task_image, cpu=cpu, memory=memory)

        # every task, configure included, runs inside the exit handler (see cleanup_exit_handler), so the pipeline
        # has no output of its own (KFP takes those only from the top level): the report is the report task's
        # artifact `report_dir`
        with cleanup_exit_handler(opts, launch_mode=launch_mode, config=config, image=image):
            run = configure_task(opts, config=config, launch_mode=launch_mode, accelerator_type=accelerator_type,
                                 accelerator_count=accelerator_count, image=image)
            cfg = run.outputs
            prep = common(prepare(source=source, options=cfg["prepare_options"], output_uri=cfg["data_uri"]),
                          "prepare", cfg["prepare_cpu"], cfg["prepare_memory"])
            data = prep.outputs["dataset"]
            history = None
            prev = None
            for k in range(steps):
                if k == 0 and opts.import_step0:
                    imp = dsl.importer(artifact_uri=step0_model, artifact_class=Model, reimport=False)
                    imp.set_display_name("import step 0")
                    model = imp.output
                else:
                    kwargs: dict[str, Any] = {"prev_model": prev} if prev is not None else {}
                    tr = train_step(
                        task=task, step=k, method=method, data=data, options=train_options, hparams=hparams,
                        launch_mode=launch_mode, workdir=workdir, run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                        pipeline_run=dsl.PIPELINE_JOB_ID_PLACEHOLDER, num_workers=num_workers, nproc_per_node=nproc,
                        image=image, namespace=cfg["namespace"], gpus=gpus_per_node, cpu=cfg["job_cpu"],
                        memory=cfg["job_memory"], node_selector=cfg["node_selector"], tolerations=cfg["tolerations"],
                        volumes=job_volumes(opts), queue=cfg["queue"], priority_class=cfg["priority_class"],
                        timeout=cfg["job_timeout_s"], pending_timeout=cfg["pending_timeout_s"], **kwargs,
                    )
                    common(tr, f"train step {k}", cfg["train_task_cpu"], cfg["train_task_memory"],
                           cfg["train_task_image"])
                    train_placement(tr, run)
                    model = tr.outputs["model"]
                earlier: dict[str, Any] = {"earlier": history} if history is not None else {}
                ev = common(evaluate(data=data, model=model, options=test_options, method=method,
                                     run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, **earlier), f"evaluate step {k}",
                            cfg["evaluate_cpu"], cfg["evaluate_memory"])
                history = ev.outputs["history"]
                prev = model
            common(report(run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, keep_pushed_metrics=cfg["keep_pushed_metrics"],
                          history=history), "report", REPORT_CPU, REPORT_MEMORY)

    if not opts.import_step0:  # the parameter exists only where it is used
        sig = inspect.signature(cdseg_pipeline)
        cdseg_pipeline.__signature__ = sig.replace(  # type: ignore[attr-defined]
            parameters=[p for p in sig.parameters.values() if p.name != "step0_model"])
    with_param_docs(cdseg_pipeline, "Class-incremental training of one task, step by step, with evaluation and a "
                    "report.", PIPELINE_DOCS)
    return dsl.pipeline(
        name=pipeline_name(task),
        description=f"cdseg: class-incremental segmentation, task {task} ({steps} steps): prepare -> "
                    f"train/evaluate each step from the previous step's checkpoint -> report",
    )(cdseg_pipeline)
