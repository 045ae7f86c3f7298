"""`JobSpec`: the one model of an incremental step's distributed training job.

It is backend-neutral (a `cdseg.launch.backend.JobBackend` turns it into a TrainJob or a PyTorchJob):
plain values only, no Kubernetes client objects. `cdseg launch`'s options, the train component's job
parameters and the pods' command derive from it; names and labels derived from it live here too.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, ClassVar, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from cdseg import __version__
from cdseg.config import Section
from cdseg.config.loader import format_validation_error
from cdseg.errors import ConfigError

#: label keys put on the job and its pods (values are DNS-safe, see `label_value`)
LABEL_RUN = "cdseg.io/run"
#: the pipeline run a job is part of: what a pipeline's exit task (and `cdseg launch cleanup --pipeline-run`)
#: deletes by, as an experiment's cells label `LABEL_RUN` each with an id of its own
LABEL_PIPELINE_RUN = "cdseg.io/pipeline-run"
LABEL_STEP = "cdseg.io/step"
LABEL_TASK = "cdseg.io/task"
LABEL_METRICS = "cdseg.io/metrics"
ANNOTATION_RUN = "cdseg.io/run-name"  # the run name unabridged
ANNOTATION_PIPELINE_RUN = "cdseg.io/pipeline-run-name"  # the pipeline run unabridged
ANNOTATION_SPEC_HASH = "cdseg.io/spec-hash"  # of the job's spec, to notice an adopted job built differently
COMMON_LABELS = {"app.kubernetes.io/name": "cdseg", "app.kubernetes.io/component": "trainer",
                 "app.kubernetes.io/managed-by": "cdseg-launch"}

#: how the pods start torchrun (see `cdseg.train.torchrun`)
TORCHRUN = ("python", "-m", "cdseg.train.torchrun")

#: job names stay this short because the operator names Services `<job>-worker-<i>`, which must be
#: DNS-1035 labels of at most 63 characters
MAX_JOB_NAME = 47

RestartPolicy = Literal["OnFailure", "Never", "ExitCode", "Always"]
CleanPodPolicy = Literal["None", "Running", "All"]
Backend = Literal["auto", "trainjob", "pytorchjob"]

#: the project's image (docker/Dockerfile), the default of every job and of the pipeline's tasks
DEFAULT_IMAGE = f"ghcr.io/cdseg/cdseg:{__version__}"


class VolumeMount(Section):
    """A PersistentVolumeClaim mounted into every trainer pod."""

    claim: str = Field(description="name of the PersistentVolumeClaim")
    mount_path: str = Field(description="where the pods see it (an absolute path)")
    read_only: bool = Field(False, description="mount it read-only")
    sub_path: str = Field("", description="mount only this folder of the volume ('' for all of it)")


class JobSpec(Section):
    """One step's training job: kind, identity, what runs, where and with what resources.

    The one description of a job: `cdseg launch`'s options are its fields (plus how to follow the job,
    `cdseg.launch.config.LaunchConfig`), the pipeline's train component maps its parameters onto it
    (`components/train/job.py`), and every backend builds its object from it. The pods run
    `cdseg train --config <file>`, the file being `train_config`: the resolved TrainConfig, resolved
    from `train_args` (`cdseg train`'s options) when not given (see `cdseg.launch.trainconfig`).
    """

    #: resolve `train_args` into `train_config` when validated (`LaunchConfig` does it in `to_spec`, once the
    #: arguments after `--` are known)
    resolve_on_validate: ClassVar[bool] = True

    backend: Backend = Field(
        "auto", description="kind of job: trainjob (Kubeflow Trainer v2), pytorchjob (Training Operator v1, legacy) "
                            "or auto (whichever the cluster serves, TrainJob first; --dry-run prints a TrainJob)")
    runtime: str = Field("torch-distributed", description="trainjob: the ClusterTrainingRuntime (or TrainingRuntime, "
                                                          "see runtime_kind) the job references")
    runtime_kind: Literal["ClusterTrainingRuntime", "TrainingRuntime"] = Field(
        "ClusterTrainingRuntime", description="trainjob: kind of the runtime (TrainingRuntime: one in the job's namespace)")

    run: str = Field("cdseg", description="run name; with the step it names the job (cdseg-<run>-s<step>-<hash>) "
                                          "and labels it and its pods")
    pipeline_run: str = Field("", description="the pipeline run the job is part of (label cdseg.io/pipeline-run, "
                                               "which cdseg launch cleanup --pipeline-run and the pipelines' exit "
                                               "task delete by; a pipeline passes its run id); '' for the run name")
    task: str = Field("", description="task name (label and --task.name; may also come from the train arguments)")
    step: int = Field(0, ge=0, description="incremental step (label and --task.step)")
    namespace: str = Field("cdseg", description="Kubernetes namespace of the job")
    image: str = Field(DEFAULT_IMAGE, min_length=1, description="training image (docker/Dockerfile)")
    replicas: int = Field(1, ge=1, description="pods in all (trainjob: numNodes; pytorchjob: 1 master + "
                                               "replicas-1 workers)")
    nproc_per_node: int = Field(1, ge=1, description="training processes per pod (one per GPU)")
    gpus: int = Field(0, ge=0, description="nvidia.com/gpu per pod (0: CPU, gloo)")
    cpu: str = Field("2", description="CPU request per pod, Kubernetes quantity (also the limit unless cpu_limit)")
    cpu_limit: str = Field("", description="CPU limit per pod ('' for the request)")
    memory: str = Field("8Gi", description="memory request and limit per pod, Kubernetes quantity (bytes)")
    shm_size: str = Field("1Gi", description="size of the memory-backed /dev/shm per pod (bytes; counts against memory)")
    tmp_size: str = Field("2Gi", description="size limit of the writable /tmp per pod (bytes)")
    cache_size: str = Field("10Gi", description="size limit of the /cache emptyDir per pod (bytes; unless a volume "
                                                "mounts /cache)")
    node_selector: dict[str, str] = Field(default_factory=dict, description="node labels the pods must match (JSON)")
    tolerations: list[dict[str, Any]] = Field(default_factory=list,
                                              description='pod tolerations (JSON list, e.g. [{"key":"nvidia.com/gpu",'
                                                          '"operator":"Exists","effect":"NoSchedule"}])')
    service_account: str = Field("cdseg-trainer", description="service account of the trainer pods ('' for default)")
    s3_secret: str = Field("cdseg-s3", description="Secret holding AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY ('' for none)")
    defaults_config_map: str = Field("cdseg-defaults", description="ConfigMap of CDSEG_* defaults the pods read as "
                                                                   "env (optional; pytorchjob only; '' for none)")
    data_pvc: str = Field("", description="PersistentVolumeClaim mounted at /data in every pod ('' for none)")
    volumes: list[VolumeMount] = Field(default_factory=list, description='more PVCs to mount (JSON list, e.g. '
                                                                        '[{"claim":"work","mount_path":"/mnt/cdseg"}])')
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        "IfNotPresent", description="when the kubelet pulls the image (pytorchjob)")
    image_pull_secrets: list[str] = Field(default_factory=list, description="Secrets for a private registry")
    env: dict[str, str] = Field(default_factory=dict, description="extra environment variables of the trainer (JSON)")
    metrics_port: int = Field(9400, ge=1, le=65535, description="port of rank 0's /metrics (local rank r: port + r)")
    restart_policy: RestartPolicy = Field(
        "ExitCode", description="pytorchjob pod restarts: ExitCode retries signals/OOM and exit 200 (128-255) only")
    backoff_limit: int = Field(3, ge=0, description="pytorchjob: pod restarts before the job fails")
    active_deadline: int | None = Field(None, ge=1, description="job's own wall-clock limit (seconds; server side; "
                                                                "cdseg launch's default: --timeout, so the job cannot "
                                                                "outlive the launcher's budget even if the launcher "
                                                                "is killed)")
    ttl: int | None = Field(86400, ge=0, description="pytorchjob: seconds a finished job is kept before the operator "
                                                     "deletes it")
    clean_pod_policy: CleanPodPolicy = Field("Running", description="pytorchjob: which pods go when the job finishes")
    priority_class: str = Field("", description="PriorityClass of the pods (pytorchjob) or Kueue WorkloadPriorityClass "
                                                "(trainjob); '' for none")
    queue: str = Field("", description="Kueue LocalQueue of the job (label kueue.x-k8s.io/queue-name; '' for none)")
    elastic_min: int | None = Field(None, ge=1, description="pytorchjob: train elastically (c10d rendezvous), going "
                                                            "on with down to this many pods when nodes are lost; "
                                                            "none: fixed size")
    elastic_max: int | None = Field(None, ge=1, description="pytorchjob, elastic: at most this many pods "
                                                            "(default: replicas)")
    elastic_max_restarts: int = Field(3, ge=0, description="pytorchjob, elastic: rank restarts before the job fails")
    run_as_user: int = Field(1000, ge=1, description="uid (and gid) of the trainer pods (the images' cdseg user)")
    labels: dict[str, str] = Field(default_factory=dict, description="extra labels of the job and its pods (JSON)")
    annotations: dict[str, str] = Field(default_factory=dict, description="extra annotations of the job (JSON)")
    train_args: list[str] = Field(default_factory=list, description="arguments of `cdseg train` (YAML/JSON list; or "
                                                                    "give them after --), resolved into the pods' "
                                                                    "config file")
    # not an option: the resolved TrainConfig the pods read (from train_args, or given whole by the pipeline)
    train_config: dict[str, Any] = Field(default_factory=dict, exclude=True,
                                         description="the resolved TrainConfig (a mapping) the pods read as a file")

    def __init__(self, **data: Any) -> None:
        """Validate `data`; a bad value is a `ConfigError` naming the field (as from the command line)."""
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc)) from exc

    @field_validator("run", "runtime")
    @classmethod
    def _not_empty(cls, value: str, info: ValidationInfo) -> str:
        if not value.strip():
            raise ValueError(f"{info.field_name} is empty; give it a name")
        return value

    @field_validator("pipeline_run")
    @classmethod
    def _labelable(cls, value: str) -> str:
        if value and not label_value(value):
            raise ValueError(f"pipeline_run={value!r} has no letter or digit to label the job with; give the "
                             "pipeline's run id, or '' for the run name")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> JobSpec:
        if self.gpus and self.nproc_per_node > self.gpus:
            raise ValueError(f"nproc_per_node={self.nproc_per_node} exceeds gpus={self.gpus} per pod; "
                             "use one process per GPU")
        if self.elastic_min is not None and not 1 <= self.elastic_min <= self.replicas <= (
                self.elastic_max or self.replicas):
            raise ValueError(f"elastic_min={self.elastic_min}, replicas={self.replicas}, elastic_max="
                             f"{self.elastic_max}: need 1 <= elastic_min <= replicas <= elastic_max")
        if self.elastic_max is not None and self.elastic_min is None:
            raise ValueError(f"elastic_max={self.elastic_max} needs elastic_min (which turns elastic training on)")
        _check_arg(self.train_args, "--task.step", str(self.step), "step")
        if self.task:
            _check_arg(self.train_args, "--task.name", self.task, "task")
        if self.train_config:
            task = self.train_config.get("task") or {}
            if task.get("step") != self.step or (self.task and task.get("name") != self.task):
                raise ValueError(f"train_config's task {task.get('name')!r} step {task.get('step')!r} disagrees "
                                 f"with task={self.task!r} step={self.step}; make them equal")
        elif self.resolve_on_validate:
            from cdseg.launch.trainconfig import resolve_train_config

            # set without re-validation (validate_assignment would run this validator again)
            self.__dict__["train_config"] = resolve_train_config(self.train_args, self.task, self.step)
        return self

    def replace(self, **changes: Any) -> JobSpec:
        """A validated copy with `changes` (train_args or train_config changes re-resolve the config)."""
        data = {**self.model_dump(), **changes}
        if "train_config" not in changes and "train_args" not in changes and not {"task", "step"} & set(changes):
            data["train_config"] = self.train_config  # unchanged: not resolved again
        return JobSpec(**{k: v for k, v in data.items() if k in JobSpec.model_fields})

    @property
    def name(self) -> str:
        """The deterministic job name of this (run, step)."""
        return job_name(self.run, self.step)

    @property
    def pipeline_run_name(self) -> str:
        """The pipeline run the job is part of: `pipeline_run`, else the run itself (a job `cdseg launch` started)."""
        return self.pipeline_run or self.run

    @property
    def world_size(self) -> int:
        """Training processes in all."""
        return self.replicas * self.nproc_per_node

    @property
    def mounts(self) -> list[VolumeMount]:
        """Every PVC the pods mount: data_pvc at /data, then volumes."""
        data = [VolumeMount(claim=self.data_pvc, mount_path="/data")] if self.data_pvc else []
        return data + list(self.volumes)

    def identity_labels(self) -> dict[str, str]:
        """Labels that identify the (run, step) a job belongs to (adoption checks them) and the pipeline run it is
        part of (the clean-up of a whole pipeline run selects by it); the job's, its pods' and its ConfigMap's."""
        out = {LABEL_RUN: label_value(self.run), LABEL_STEP: str(self.step),
               LABEL_PIPELINE_RUN: label_value(self.pipeline_run_name)}
        if self.task:
            out[LABEL_TASK] = label_value(self.task)
        return out

    def train_command(self) -> list[str]:
        """`torchrun -m cdseg train --config <the mounted train config>` (through `cdseg.train.torchrun`, which
        passes a rank's retryable exit code on, where torchrun itself exits 1); torchrun reads nodes, rank and
        master from the PET_* env."""
        from cdseg.launch.trainconfig import CONFIG_PATH

        return [*TORCHRUN, "-m", "cdseg", "train", "--config", CONFIG_PATH]


def job_name(run: str, step: int) -> str:
    """`cdseg-<run>-s<step>-<hash>`: DNS-1123/1035 safe, at most 47 characters, unique per (run, step)."""
    digest = hashlib.sha256(f"{run}\0{step}".encode()).hexdigest()[:8]
    suffix = f"-s{step}-{digest}"
    slug = re.sub(r"[^a-z0-9]+", "-", run.lower()).strip("-")
    room = MAX_JOB_NAME - len("cdseg-") - len(suffix)
    slug = slug[:max(room, 0)].rstrip("-")
    return f"cdseg-{slug}{suffix}" if slug else f"cdseg{suffix}"


def label_value(text: str) -> str:
    """`text` as a valid label value (at most 63 characters of [A-Za-z0-9._-], alphanumeric ends)."""
    value = re.sub(r"[^A-Za-z0-9._-]+", "-", text)[:63]
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", value)


def _arg_value(args: list[str] | tuple[str, ...], flag: str) -> str | None:
    alt = flag.replace("_", "-")
    for i, a in enumerate(args):
        if a in (flag, alt) and i + 1 < len(args):
            return args[i + 1]
        for f in (flag, alt):
            if a.startswith(f + "="):
                return a[len(f) + 1:]
    return None


def _check_arg(args: list[str] | tuple[str, ...], flag: str, expected: str, field_name: str) -> None:
    value = _arg_value(args, flag)
    if value is not None and value != expected:
        raise ConfigError(f"train argument {flag} {value} disagrees with {field_name}={expected}; "
                          f"drop {flag} from the train arguments or make them equal")
