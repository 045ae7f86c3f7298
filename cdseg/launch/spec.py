"""`JobSpec`: everything that defines one incremental step's distributed training job.

It is backend-neutral (a `cdseg.launch.backend.JobBackend` turns it into a TrainJob or a PyTorchJob):
plain values only, no Kubernetes client objects. Names, labels and the train command derived from it live here too.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Literal

from cdseg.errors import ConfigError

#: label keys put on the job and its pods (values are DNS-safe, see `label_value`)
LABEL_RUN = "cdseg.io/run"
LABEL_STEP = "cdseg.io/step"
LABEL_TASK = "cdseg.io/task"
LABEL_METRICS = "cdseg.io/metrics"
ANNOTATION_RUN = "cdseg.io/run-name"  # the run name unabridged
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


@dataclass(frozen=True)
class VolumeMount:
    """A PersistentVolumeClaim mounted into every trainer pod."""

    claim: str
    mount_path: str
    read_only: bool = False
    sub_path: str = ""


@dataclass(frozen=True, kw_only=True)
class JobSpec:
    """One step's training job: identity, what runs, where and with what resources.

    `train_args` are the `cdseg train` arguments (e.g. `["--task.name", "222a", "--task.step", "1",
    "--method", "mib-cd", "--data.root", "s3://...", "--output", "s3://..."]`); `--task.name` and
    `--task.step` are added from `task`/`step` when absent and must agree with them when present.
    """

    run: str
    step: int
    image: str
    train_args: tuple[str, ...] = ()
    task: str = ""
    namespace: str = "cdseg"
    replicas: int = 1                  # pods in all: 1 Master + (replicas - 1) Workers
    nproc_per_node: int = 1            # processes per pod (torchrun --nproc-per-node)
    gpus: int = 0                      # nvidia.com/gpu per pod
    cpu: str = "2"                     # CPU request per pod
    cpu_limit: str | None = None       # default: the request
    memory: str = "8Gi"                # memory request and limit per pod
    shm_size: str = "1Gi"              # size limit of the memory-backed /dev/shm
    tmp_size: str = "2Gi"              # size limit of the writable /tmp
    cache_size: str = "10Gi"           # size limit of the /cache emptyDir (unless a volume mounts /cache)
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[dict[str, object], ...] = ()
    service_account: str | None = "cdseg-trainer"
    s3_secret: str | None = "cdseg-s3"       # Secret with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
    defaults_config_map: str | None = "cdseg-defaults"  # ConfigMap of CDSEG_* defaults (optional)
    volumes: tuple[VolumeMount, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    image_pull_secrets: tuple[str, ...] = ()
    metrics_port: int = 9400
    restart_policy: RestartPolicy = "ExitCode"  # exit 1-127 permanent, 128-255 (signals, OOM) retried
    backoff_limit: int = 3
    active_deadline_s: int | None = None
    ttl_s: int | None = 86400
    clean_pod_policy: CleanPodPolicy = "Running"
    priority_class: str | None = None
    queue: str | None = None           # Kueue LocalQueue (label kueue.x-k8s.io/queue-name)
    elastic_min: int | None = None     # PyTorchJob: elastic (c10d) down to this many pods instead of failing
    elastic_max: int | None = None     # ... and up to this many (default: replicas)
    elastic_max_restarts: int = 3      # ... restarting the ranks this many times
    backend: Literal["auto", "trainjob", "pytorchjob"] = "auto"  # auto: whichever the cluster serves, TrainJob first
    runtime: str = "torch-distributed"  # TrainJob: the (Cluster)TrainingRuntime it references
    runtime_kind: Literal["ClusterTrainingRuntime", "TrainingRuntime"] = "ClusterTrainingRuntime"
    run_as_user: int = 1000
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.run.strip():
            raise ConfigError("run='' is empty; give the run a name (it names the job and labels its pods)")
        if self.step < 0:
            raise ConfigError(f"step={self.step} is negative; steps count from 0")
        if self.replicas < 1:
            raise ConfigError(f"replicas={self.replicas} must be at least 1 (the master)")
        if self.nproc_per_node < 1:
            raise ConfigError(f"nproc_per_node={self.nproc_per_node} must be at least 1")
        if self.gpus and self.nproc_per_node > self.gpus:
            raise ConfigError(f"nproc_per_node={self.nproc_per_node} exceeds gpus={self.gpus} per pod; "
                              "use one process per GPU")
        if self.elastic_min is not None and not 1 <= self.elastic_min <= self.replicas <= (
                self.elastic_max or self.replicas):
            raise ConfigError(f"elastic_min={self.elastic_min}, replicas={self.replicas}, elastic_max="
                              f"{self.elastic_max}: need 1 <= elastic_min <= replicas <= elastic_max")
        if self.elastic_max is not None and self.elastic_min is None:
            raise ConfigError(f"elastic_max={self.elastic_max} needs elastic_min (which turns elastic training on)")
        if not self.runtime.strip():
            raise ConfigError("runtime='' is empty; name the TrainingRuntime (default torch-distributed)")
        if not self.image:
            raise ConfigError("image='' is empty; give the training image (see docker/)")
        _check_arg(self.train_args, "--task.step", str(self.step), "step")
        if self.task:
            _check_arg(self.train_args, "--task.name", self.task, "task")

    @property
    def name(self) -> str:
        """The deterministic job name of this (run, step)."""
        return job_name(self.run, self.step)

    @property
    def world_size(self) -> int:
        """Training processes in all."""
        return self.replicas * self.nproc_per_node

    def identity_labels(self) -> dict[str, str]:
        """Labels that identify the (run, step) a job belongs to (used for adoption)."""
        out = {LABEL_RUN: label_value(self.run), LABEL_STEP: str(self.step)}
        if self.task:
            out[LABEL_TASK] = label_value(self.task)
        return out

    def train_command(self) -> list[str]:
        """`torchrun -m cdseg train ...` (through `cdseg.train.torchrun`, which passes a rank's retryable exit
        code on, where torchrun itself exits 1); torchrun reads nodes, rank and master from the PET_* env."""
        args = list(self.train_args)
        if self.task and not _has_arg(args, "--task.name"):
            args = ["--task.name", self.task, *args]
        if not _has_arg(args, "--task.step"):
            args = [*args, "--task.step", str(self.step)]
        return [*TORCHRUN, "-m", "cdseg", "train", *args]


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


def _has_arg(args: list[str] | tuple[str, ...], flag: str) -> bool:
    alt = flag.replace("_", "-")
    return any(a in (flag, alt) or a.startswith((flag + "=", alt + "=")) for a in args)


def _arg_value(args: list[str] | tuple[str, ...], flag: str) -> str | None:
    alt = flag.replace("_", "-")
    for i, a in enumerate(args):
        if a in (flag, alt) and i + 1 < len(args):
            return args[i + 1]
        for f in (flag, alt):
            if a.startswith(f + "="):
                return a[len(f) + 1:]
    return None


def _check_arg(args: tuple[str, ...], flag: str, expected: str, field_name: str) -> None:
    value = _arg_value(args, flag)
    if value is not None and value != expected:
        raise ConfigError(f"train argument {flag} {value} disagrees with {field_name}={expected}; "
                          f"drop {flag} from the train arguments or make them equal")
