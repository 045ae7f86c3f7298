"""`make_pipeline(task)`: prepare -> train(0) -> evaluate(0) -> train(1, prev = train(0)) -> ... -> report."""

import re
from dataclasses import dataclass, field
from typing import Any

from kfp import dsl, kubernetes
from kfp.dsl import Model

from components import DEFAULT_IMAGE
from components.evaluate import evaluate
from components.prepare import prepare
from components.report import report
from components.train import train_step

#: the tasks whose compiled pipeline is checked in, as (dataset, task): pipelines/compiled/<task>.yaml (the ISPRS
#: tasks, shared by Potsdam and Vaihingen). Any other dataset's task compiles on demand
#: (`cdseg pipeline compile --dataset loveda --task 4-3` -> loveda-4-3.yaml).
SHIPPED_TASKS: tuple[tuple[str, str], ...] = (
    ("potsdam", "offline"), ("potsdam", "222a"), ("potsdam", "321"), ("potsdam", "6s"),
)

#: pipeline parameter -> TrainConfig option it sets (its default is TrainConfig's, read at compile time)
HPARAMS: dict[str, str] = {
    "epochs": "trainer.epochs",
    "batch_size": "trainer.batch_size",
    "lr": "optimizer.lr",
    "patience": "trainer.patience",
    "crop_size": "data.crop_size",
    "in_channels": "in_channels",
}

#: credentials and storage settings every task gets as environment variables (k8s/base: Secret cdseg-s3,
#: ConfigMap cdseg-defaults), so s3:// URIs work in the component pods as in the trainer pods
S3_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
CONFIG_MAP_KEYS = ("CDSEG_STORAGE__ENDPOINT_URL", "CDSEG_STORAGE__REGION", "CDSEG_METRICS__PUSHGATEWAY")


@dataclass(frozen=True)
class BuildOptions:
    """Compile-time choices (KFP needs these fixed in the YAML); everything else is a run parameter."""

    retries: int = 1                      # retries of every task (train: a preempted node; the step restarts)
    backoff: str = "60s"                  # first retry delay (doubles each time)
    accelerator_type: str = ""            # e.g. nvidia.com/gpu: GPUs for the train tasks themselves (local mode)
    accelerator_count: int = 0
    pvc_name: str = ""                    # a PVC mounted in every task (and passed to the training jobs) ...
    pvc_mount: str = "/mnt/cdseg"         # ... at this path; set workdir under it
    import_step0: bool = False            # step 0's checkpoint is imported (parameter step0_model), not trained
    caching: bool = True                  # KFP execution caching of the tasks
    s3_secret: str = "cdseg-s3"           # Secret with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (optional) ...
    config_map: str = "cdseg-defaults"    # ... and the ConfigMap of CDSEG_STORAGE__* defaults (optional), as env
    # pod labels on every task; part-of=cdseg is what the Pushgateway's NetworkPolicy admits
    extra_labels: dict[str, str] = field(default_factory=lambda: {"app.kubernetes.io/part-of": "cdseg"})

    def __post_init__(self) -> None:
        if self.retries < 0 or self.accelerator_count < 0:
            raise ValueError("retries and accelerator_count must be >= 0")
        if self.accelerator_count and not self.accelerator_type:
            raise ValueError("accelerator_count needs accelerator_type (e.g. nvidia.com/gpu)")


def num_steps_of(task: str, dataset: str = "potsdam", dataset_def: str | None = None) -> int:
    """The task's step count: a task of the dataset's definition (cdseg.data), or a task YAML file over its classes."""
    from cdseg.data.source import get_source
    from cdseg.tasks import get_task

    fields = get_source(dataset, dataset_def).definition.manifest_fields()
    return int(get_task(task, fields).num_steps)


def hparam_defaults() -> dict[str, Any]:
    """Each hyper-parameter's default: TrainConfig's, so the pipeline and `cdseg train` agree."""
    from cdseg.config.fields import iter_leaf_fields
    from cdseg.train.config import TrainConfig

    leaves = {leaf.path: leaf for leaf in iter_leaf_fields(TrainConfig)}
    return {name: leaves[path].info.get_default(call_default_factory=True) for name, path in HPARAMS.items()}


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
    in_channels_default = int(hp["in_channels"] or 0)

    @dsl.pipeline(
        name=pipeline_name(task),
        description=f"cdseg: class-incremental segmentation, task {task} ({steps} steps): prepare -> "
                    f"train/evaluate each step from the previous step's checkpoint -> report",
    )
    def cdseg_pipeline(
        source: str,
        method: str = "mib-cd",
        epochs: int = hp["epochs"],
        batch_size: int = hp["batch_size"],
        lr: float = hp["lr"],
        patience: int = hp["patience"],
        crop_size: int = hp["crop_size"],
        in_channels: int = in_channels_default,
        train_options: dict = {},  # noqa: B006
        prepare_options: dict = {},  # noqa: B006
        test_options: dict = {},  # noqa: B006
        image: str = DEFAULT_IMAGE,
        launch_mode: str = "local",
        nproc: int = 1,
        num_workers: int = 0,
        gpus_per_node: int = 0,
        job_cpu: str = "",
        job_memory: str = "",
        namespace: str = "",
        workdir: str = "",
        data_uri: str = "",
        job_timeout_s: int = 86400,
        cpu_limit: str = "4",
        memory_limit: str = "16Gi",
        node_selector: dict = {},  # noqa: B006
        tolerations: list = [],  # noqa: B006
        step0_model: str = "",
        queue: str = "",
        priority_class: str = "",
        pending_timeout_s: int = 1800,
        keep_pushed_metrics: bool = False,
    ) -> dsl.Artifact:
        """Class-incremental training of one task, step by step, with evaluation and a report.

        Args:
            source: the release (zips or folders) or generated scenes to prepare: a path or s3:// URI.
            method: training recipe: ft, uft, mib, mib-cd, ft-cd or joint (the offline upper bound).
            epochs: training epochs per step (the recipe's early stopping and train_options may end it sooner).
            batch_size: images per iteration and process.
            lr: the optimizer's learning rate.
            patience: validations without improvement before early stopping (0: never stop early).
            crop_size: side of the square training crop (pixels).
            in_channels: use the first N bands of the prepared data (3: RGB, 4: RGB + infrared).
            train_options: other cdseg train options as dotted keys, e.g. {"trainer.max_iters": 320}.
            prepare_options: other cdseg prepare options as dotted keys, e.g. {"patch_size": 512}.
            test_options: other cdseg test options as dotted keys, e.g. {"eval.tta": true}.
            image: container image of every task and of the training jobs.
            launch_mode: where each step trains: local (in the task's pod), trainjob, pytorchjob or auto.
            nproc: training processes per node (torchrun), one per GPU.
            num_workers: training job nodes besides the first (job modes).
            gpus_per_node: GPUs per training job pod (0: CPU with gloo).
            job_cpu: CPU limit per training job pod, e.g. "8" (empty: none).
            job_memory: memory limit per training job pod, e.g. "32Gi" (empty: none).
            namespace: namespace of the training jobs (empty: the namespace the pipeline runs in).
            workdir: storage the jobs share with the pipeline: an s3:// prefix or a path on a mounted PVC.
            data_uri: where prepare writes the dataset (empty: a pipeline artifact).
            job_timeout_s: budget of one training step in seconds: the job's deadline and the wait limit.
            cpu_limit: CPU limit of each pipeline task's own pod.
            memory_limit: memory limit of each pipeline task's own pod.
            node_selector: node labels for the training jobs' pods, e.g. {"nvidia.com/gpu.product": "NVIDIA-H100"}.
            tolerations: tolerations (Kubernetes objects) for the training jobs' pods.
            step0_model: a step-0 checkpoint URI to import instead of training step 0 (pipelines compiled with
                import_step0 only; ignored otherwise).
            queue: Kueue LocalQueue of the training jobs (empty: none).
            priority_class: PriorityClass (pytorchjob) or Kueue WorkloadPriorityClass (trainjob) of the jobs.
            pending_timeout_s: fail a step, deleting its job, when its pods have not started by then (seconds).
            keep_pushed_metrics: keep the evaluation metrics pushed to the Pushgateway after the report
                (default: the report deletes this run's groups).
        """
        hparams = {"trainer.epochs": epochs, "trainer.batch_size": batch_size, "optimizer.lr": lr,
                   "trainer.patience": patience, "data.crop_size": crop_size, "in_channels": in_channels}

        def common(t: Any, name: str) -> Any:
            t.set_display_name(name)
            t.set_container_image(image)
            t.set_cpu_limit(cpu_limit).set_memory_limit(memory_limit)
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

        prep = common(prepare(source=source, options=prepare_options, output_uri=data_uri), "prepare")
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
                    launch_mode=launch_mode, nproc=nproc, image=image, namespace=namespace, workdir=workdir,
                    num_workers=num_workers, gpus_per_node=gpus_per_node, cpu=job_cpu, memory=job_memory,
                    node_selector=node_selector, tolerations=tolerations, job_timeout_s=job_timeout_s,
                    run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, pvc_name=opts.pvc_name, pvc_mount=opts.pvc_mount,
                    queue=queue, priority_class=priority_class, pending_timeout_s=pending_timeout_s, **kwargs,
                )
                common(tr, f"train step {k}")
                if opts.accelerator_type:
                    tr.set_accelerator_type(opts.accelerator_type).set_accelerator_limit(opts.accelerator_count)
                kubernetes.add_node_selector_json(tr, node_selector)
                kubernetes.add_toleration_json(tr, tolerations)
                model = tr.outputs["model"]
            earlier: dict[str, Any] = {"earlier": history} if history is not None else {}
            ev = common(evaluate(data=data, model=model, options=test_options, method=method,
                                 run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, **earlier), f"evaluate step {k}")
            history = ev.outputs["history"]
            prev = model
        rep = common(report(run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, keep_pushed_metrics=keep_pushed_metrics,
                            history=history), "report")
        return rep.outputs["report_dir"]

    return cdseg_pipeline
