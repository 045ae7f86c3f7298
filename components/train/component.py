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
    nproc: int = 1,
    image: str = "",
    namespace: str = "",
    workdir: str = "",
    num_workers: int = 0,
    gpus_per_node: int = 0,
    cpu: str = "",
    memory: str = "",
    node_selector: dict = {},  # noqa: B006
    tolerations: list = [],  # noqa: B006
    job_timeout_s: int = 86400,
    run_id: str = "",
    api_host: str = "",
    pvc_name: str = "",
    pvc_mount: str = "",
    queue: str = "",
    priority_class: str = "",
    pending_timeout_s: int = 1800,
) -> str:
    """Train incremental step `step` of `task` with `method`, from the previous step's checkpoint.

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
        launch_mode: `local` (this process, or `torchrun` with `nproc` processes), or a cluster job: `trainjob`
            (Kubeflow Trainer v2), `pytorchjob` (Training Operator v1, legacy) or `auto` (whichever is served).
        nproc: processes per node (local torchrun, or the job's processes per node).
        image: the job's image (default: the project's image).
        namespace: the job's namespace (default: this pod's).
        workdir: shared storage for a job (an s3:// prefix, or a PVC path mounted in the job's pods).
        num_workers: job nodes besides the first (rank 0).
        gpus_per_node: GPUs per job pod (0: CPU, gloo).
        cpu: CPU limit per job pod (e.g. "8"; empty: none).
        memory: memory limit per job pod (e.g. "32Gi"; empty: none).
        node_selector: node labels for the job's pods.
        tolerations: tolerations (Kubernetes objects) for the job's pods.
        job_timeout_s: the step's budget: the job's own deadline and the launcher's wait limit (seconds).
        run_id: a run-unique id naming the job and its storage prefix (the pipeline passes its run id).
        api_host: Kubernetes API URL (tests); empty: in-cluster config, else ~/.kube/config.
        pvc_name: a PVC mounted in the job's pods at `pvc_mount` (the same one this pod mounts), for a PVC workdir.
        pvc_mount: where `pvc_name` is mounted.
        queue: Kueue LocalQueue of the job (empty: none).
        priority_class: the job pods' PriorityClass (pytorchjob) or Kueue WorkloadPriorityClass (trainjob).
        pending_timeout_s: fail the step (and delete the job) when its pods have not started by then.

    Returns:
        Where the checkpoint lives: the artifact (local mode) or its shared-storage URI (job modes).
    """
    from components.artifacts import setup_logging
    from components.train.run import TrainRequest, run_train_step

    setup_logging()
    request = TrainRequest(
        task=task, step=step, method=method, options=options, hparams=hparams, launch_mode=launch_mode, nproc=nproc,
        image=image, namespace=namespace, workdir=workdir, num_workers=num_workers, gpus_per_node=gpus_per_node, cpu=cpu,
        memory=memory, node_selector=node_selector, tolerations=tolerations, job_timeout_s=job_timeout_s,
        run_id=run_id, api_host=api_host, pvc_name=pvc_name, pvc_mount=pvc_mount, queue=queue,
        priority_class=priority_class, pending_timeout_s=pending_timeout_s,
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
