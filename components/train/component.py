"""Train-step component: one incremental step, in the component's process or as a cluster job (TrainJob, PyTorchJob)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components.settings import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def train_step(
    task: str,
    step: int,
    method: str,
    data: Input[Dataset],
    model: Output[Model],
    prev_model: Input[Model] | None = None,
    options: dict = {},  # noqa: B006 (KFP needs a literal default)
    hparams: dict = {},  # noqa: B006
    launch_mode: str = "local",
    workdir: str = "",
    run_id: str = "",
    api_host: str = "",
    num_workers: int = 0,
    nproc_per_node: int = 1,
    image: str = "",
    namespace: str = "",
    gpus: int = 0,
    cpu: str = "",
    memory: str = "",
    node_selector: dict = {},  # noqa: B006
    tolerations: list = [],  # noqa: B006
    volumes: list = [],  # noqa: B006
    queue: str = "",
    priority_class: str = "",
    timeout: int = 86400,
    pending_timeout: int = 1800,
    pipeline_run: str = "",
) -> str:
    """Train incremental step `step` of `task` with `method`, from the previous step's checkpoint.

    The job parameters (from `nproc_per_node` on) are `cdseg.launch.JobSpec`'s and `cdseg launch`'s options of
    the same names (see `cdseg launch --help`); an empty string means the model's default.

    Args:
        task: task name (`offline`, `222a`, `321`, `6s`) or a task YAML URI.
        step: the step to train (0 for the first); step k > 0 needs `prev_model` = step k-1's checkpoint.
        method: training recipe (`cdseg train --help` lists them); options override its defaults.
        data: the prepared dataset.
        model: the step's checkpoint (safetensors + model.json); metadata: task, step, classes, method, checksum.
        prev_model: step k-1's checkpoint (absent at step 0).
        options: other `cdseg train` options as dotted keys, e.g. `{"kd.weight": 5, "trainer.max_iters": 20}`;
            they win over `hparams` and over the method recipe.
        hparams: the pipeline's hyper-parameters as dotted keys (`trainer.epochs`, `optimizer.lr`, ...).
        launch_mode: `local` (this process, or `torchrun` with `nproc_per_node` processes), or a cluster job:
            `trainjob` (Kubeflow Trainer v2), `pytorchjob` (Training Operator v1, legacy) or `auto` (whichever is
            served); the job's `backend`.
        workdir: shared storage for a job (an s3:// prefix, or a PVC path mounted in the job's pods).
        run_id: a run-unique id naming the job and its storage prefix (the pipeline passes its run id).
        api_host: Kubernetes API URL (tests); empty: in-cluster config, else ~/.kube/config.
        num_workers: job pods besides the first (rank 0): the job's `replicas` is 1 + num_workers.
        nproc_per_node: training processes per pod (local torchrun, or the job's).
        image: the job's image (empty: the project's image).
        namespace: the job's namespace (empty: this pod's).
        gpus: nvidia.com/gpu per job pod (0: CPU, gloo).
        cpu: CPU request and limit per job pod (e.g. "8"; empty: the job model's default).
        memory: memory request and limit per job pod (e.g. "32Gi"; empty: the job model's default).
        node_selector: node labels for the job's pods.
        tolerations: tolerations (Kubernetes objects) for the job's pods.
        volumes: PVCs mounted in the job's pods, `[{"claim": ..., "mount_path": ...}]` (a PVC workdir's).
        queue: Kueue LocalQueue of the job (empty: none).
        priority_class: the job pods' PriorityClass (pytorchjob) or Kueue WorkloadPriorityClass (trainjob).
        timeout: the step's budget in seconds: the job's own deadline and the launcher's wait limit.
        pending_timeout: fail the step (and delete the job) when its pods have not started by then (seconds).
        pipeline_run: the pipeline run the job is part of (its label `cdseg.io/pipeline-run`, which the pipeline's
            exit task deletes by; the pipelines pass their run id; empty: `run_id`).

    Returns:
        Where the checkpoint lives: the artifact (local mode) or its shared-storage URI (job modes).
    """
    from components.artifacts import setup_logging
    from components.train.run import TrainRequest, run_train_step

    setup_logging()
    request = TrainRequest(
        task=task, step=step, method=method, options=options, hparams=hparams, launch_mode=launch_mode,
        workdir=workdir, run_id=run_id, api_host=api_host, num_workers=num_workers, timeout=timeout,
        pending_timeout=pending_timeout,
        job={"nproc_per_node": nproc_per_node, "image": image, "namespace": namespace, "gpus": gpus, "cpu": cpu,
             "memory": memory, "node_selector": node_selector, "tolerations": tolerations, "volumes": volumes,
             "queue": queue, "priority_class": priority_class, "pipeline_run": pipeline_run},
    )
    return run_train_step(request, data=data, prev_model=prev_model, model=model)


def _exec_python(container: object) -> None:
    """Make KFP's `sh -ec` wrapper `exec` Python, so that a cancelled run's SIGTERM reaches the launcher,
    which then deletes the job (without it the shell gets the signal and the job is orphaned)."""
    command = list(getattr(container, "command"))  # noqa: B009 (a pydantic-free KFP spec object)
    plain = "_KFP_RUNTIME=true python3 -m kfp.dsl.executor_main"
    if plain not in command[2]:
        raise RuntimeError("KFP's lightweight-component command changed; update components/train/component.py")
    command[2] = command[2].replace(plain, "_KFP_RUNTIME=true exec python3 -m kfp.dsl.executor_main")
    container.command = command  # type: ignore[attr-defined]


_exec_python(train_step.component_spec.implementation.container)
