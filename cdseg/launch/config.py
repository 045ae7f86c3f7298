"""`LaunchConfig`: the options of `cdseg launch` (one step as a TrainJob or a PyTorchJob)."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from cdseg.config import Section
from cdseg.launch.runner import RunOptions
from cdseg.launch.spec import JobSpec, VolumeMount


class LaunchConfig(Section):
    """One incremental step as a training job: kind, identity, image, shape, resources, placement, cluster access."""

    backend: Literal["auto", "trainjob", "pytorchjob"] = Field(
        "auto", description="kind of job: trainjob (Kubeflow Trainer v2), pytorchjob (Training Operator v1, legacy) "
                            "or auto (whichever the cluster serves, TrainJob first; --dry-run prints a TrainJob)")
    runtime: str = Field("torch-distributed", description="trainjob: the ClusterTrainingRuntime (or TrainingRuntime, "
                                                          "see runtime_kind) the job references")
    runtime_kind: Literal["ClusterTrainingRuntime", "TrainingRuntime"] = Field(
        "ClusterTrainingRuntime", description="trainjob: kind of the runtime (TrainingRuntime: one in the job's namespace)")

    run: str = Field("cdseg", description="run name; with the step it names the job (cdseg-<run>-s<step>-<hash>) "
                                          "and labels its pods")
    task: str = Field("", description="task name (label and --task.name; may also come from the train arguments)")
    step: int = Field(0, ge=0, description="incremental step (label and --task.step)")
    namespace: str = Field("cdseg", description="Kubernetes namespace of the job")
    image: str = Field("ghcr.io/cdseg/cdseg:0.1.0", description="training image (docker/Dockerfile)")
    replicas: int = Field(1, ge=1, description="pods in all: 1 master + replicas-1 workers")
    nproc_per_node: int = Field(1, ge=1, description="training processes per pod (one per GPU)")
    gpus: int = Field(0, ge=0, description="nvidia.com/gpu per pod (0: CPU, gloo)")
    cpu: str = Field("2", description="CPU request (and limit) per pod, Kubernetes quantity")
    memory: str = Field("8Gi", description="memory request and limit per pod, Kubernetes quantity (bytes)")
    shm_size: str = Field("1Gi", description="size of the memory-backed /dev/shm per pod (bytes; counts against memory)")
    node_selector: dict[str, str] = Field(default_factory=dict, description="node labels the pods must match (JSON)")
    tolerations: list[dict[str, Any]] = Field(default_factory=list,
                                              description='pod tolerations (JSON list, e.g. [{"key":"nvidia.com/gpu",'
                                                          '"operator":"Exists","effect":"NoSchedule"}])')
    service_account: str = Field("cdseg-trainer", description="service account of the trainer pods ('' for default)")
    s3_secret: str = Field("cdseg-s3", description="Secret holding AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY ('' for none)")
    data_pvc: str = Field("", description="PersistentVolumeClaim mounted at /data in every pod ('' for none)")
    image_pull_secrets: list[str] = Field(default_factory=list, description="Secrets for a private registry")
    env: dict[str, str] = Field(default_factory=dict, description="extra environment variables of the trainer (JSON)")
    restart_policy: Literal["ExitCode", "OnFailure", "Never"] = Field(
        "ExitCode", description="pod restarts: ExitCode retries signals/OOM (128-255) only")
    backoff_limit: int = Field(3, ge=0, description="pod restarts before the job fails")
    active_deadline: int | None = Field(None, ge=1, description="job's own wall-clock limit (seconds; server side; "
                                                                "default: --timeout, so the job cannot outlive the "
                                                                "launcher's budget even if the launcher is killed)")
    ttl: int | None = Field(86400, ge=0, description="seconds a finished job is kept before the operator deletes it")
    timeout: float | None = Field(None, gt=0, description="launcher's wait limit (seconds); the job is deleted after it")
    elastic_min: int | None = Field(None, ge=1, description="pytorchjob: train elastically (c10d rendezvous), going "
                                                            "on with down to this many pods when nodes are lost; "
                                                            "none: fixed size")
    elastic_max: int | None = Field(None, ge=1, description="pytorchjob, elastic: at most this many pods "
                                                            "(default: replicas)")
    elastic_max_restarts: int = Field(3, ge=0, description="pytorchjob, elastic: rank restarts before the job fails")
    pending_timeout: float | None = Field(1800, gt=0, description="fail (and delete) the job when its pods have not "
                                                                  "started after this many seconds (unschedulable, "
                                                                  "queued, image pulls); none: wait")
    queue: str = Field("", description="Kueue LocalQueue of the job (label kueue.x-k8s.io/queue-name; '' for none)")
    priority_class: str = Field("", description="PriorityClass of the pods (pytorchjob) or Kueue WorkloadPriorityClass "
                                                "(trainjob); '' for none")
    delete_on_success: bool = Field(False, description="delete the job as soon as it succeeds (else ttl applies)")
    keep_failed: bool = Field(False, description="keep a failed job and its pods for debugging")
    kubeconfig: str | None = Field(None, description="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    context: str | None = Field(None, description="kubeconfig context")
    in_cluster: bool | None = Field(None, description="use the pod's service account (default: when inside a pod)")
    dry_run: bool = Field(False, description="print the job's YAML (TrainJob or PyTorchJob, per backend) and exit "
                                             "without contacting the cluster")
    train_args: list[str] = Field(default_factory=list, description="arguments of `cdseg train` (YAML/JSON list; "
                                                                    "or give them after --)")

    @field_validator("run")
    @classmethod
    def _run_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the run name must not be empty")
        return value

    @model_validator(mode="after")
    def _gpus_cover_processes(self) -> LaunchConfig:
        if self.gpus and self.nproc_per_node > self.gpus:
            raise ValueError(f"nproc_per_node={self.nproc_per_node} exceeds gpus={self.gpus}; use one process per GPU")
        return self

    def to_spec(self, extra_train_args: list[str] | tuple[str, ...] = ()) -> JobSpec:
        """The `JobSpec` these options describe (train arguments: config's, then `extra_train_args`)."""
        volumes = (VolumeMount(self.data_pvc, "/data"),) if self.data_pvc else ()
        return JobSpec(
            run=self.run, task=self.task, step=self.step, image=self.image,
            train_args=tuple(self.train_args) + tuple(extra_train_args), namespace=self.namespace,
            replicas=self.replicas, nproc_per_node=self.nproc_per_node, gpus=self.gpus, cpu=self.cpu,
            memory=self.memory, shm_size=self.shm_size, node_selector=dict(self.node_selector),
            tolerations=tuple(self.tolerations), service_account=self.service_account or None,
            s3_secret=self.s3_secret or None, volumes=volumes, env=dict(self.env),
            image_pull_secrets=tuple(self.image_pull_secrets), restart_policy=self.restart_policy,
            backoff_limit=self.backoff_limit, active_deadline_s=self.deadline(), ttl_s=self.ttl,
            backend=self.backend, runtime=self.runtime, runtime_kind=self.runtime_kind, queue=self.queue or None,
            priority_class=self.priority_class or None, elastic_min=self.elastic_min, elastic_max=self.elastic_max,
            elastic_max_restarts=self.elastic_max_restarts,
        )

    def deadline(self) -> int | None:
        """The job's `activeDeadlineSeconds`: --active-deadline, else the step's budget (--timeout), else none."""
        if self.active_deadline is not None:
            return self.active_deadline
        return max(1, math.ceil(self.timeout)) if self.timeout is not None else None

    def run_options(self) -> RunOptions:
        """How the launcher follows the job."""
        return RunOptions(timeout_s=self.timeout, delete_on_success=self.delete_on_success,
                          keep_failed=self.keep_failed, pending_timeout_s=self.pending_timeout)
