"""Launch one incremental step as a Kubernetes training job: a Kubeflow Trainer v2 TrainJob or a PyTorchJob.

    spec = JobSpec(run="exp1", step=1, task="222a", image="ghcr.io/cdseg/cdseg:0.1.0", backend="trainjob",
                   train_args=["--method", "mib-cd", "--data.dataset", "s3://b/prep", "--output", "s3://b/runs/exp1"])
    build_job(spec)                 # the manifest (a dict) of spec.backend (trainjob / pytorchjob)
    run_job(spec)                   # resolve `auto`, create or adopt, follow, stream the log; JobResult or a LaunchError

What differs between kinds is one `JobBackend` per module (`trainjob`, `pytorchjob`); following,
adoption, cancellation and errors are written once. The only package that imports `kubernetes`
(lazily: building a spec does not need it).
"""

from typing import Any

from cdseg.launch.backend import BACKEND_NAMES, JobBackend, JobState, all_backends, get_backend
from cdseg.launch.errors import (
    INSTALL_OPERATOR,
    ClusterSetupError,
    CRDNotInstalledError,
    ForbiddenError,
    ImagePullError,
    JobCancelledError,
    JobConflictError,
    JobFailedError,
    JobPendingError,
    JobTimeoutError,
    JobVanishedError,
    KubeConfigError,
    LaunchError,
    NamespaceNotFoundError,
    PodConfigError,
)
from cdseg.launch.kube import REQUIRED_PERMISSIONS, KubeApis, connect, required_permissions
from cdseg.launch.pytorchjob import PyTorchJobBackend, build_pytorchjob, job_state
from cdseg.launch.runner import JobResult, RunOptions, delete_run_jobs, resolve_backend, run_job
from cdseg.launch.spec import JobSpec, VolumeMount, job_name
from cdseg.launch.trainjob import TrainJobBackend, build_trainjob, trainjob_state


def build_job(spec: JobSpec, backend: str | None = None) -> dict[str, Any]:
    """The manifest of `spec` for `backend` (default `spec.backend`; `auto` builds a TrainJob, the current kind)."""
    name = backend or spec.backend
    return get_backend(BACKEND_NAMES[0] if name == "auto" else name).build(spec)


__all__ = [
    "BACKEND_NAMES", "INSTALL_OPERATOR", "REQUIRED_PERMISSIONS", "CRDNotInstalledError", "ClusterSetupError",
    "ForbiddenError", "ImagePullError", "JobBackend", "JobCancelledError", "JobConflictError", "JobFailedError",
    "JobPendingError", "JobResult", "JobSpec", "JobState", "JobTimeoutError", "JobVanishedError", "KubeApis",
    "KubeConfigError", "LaunchError", "NamespaceNotFoundError", "PodConfigError", "PyTorchJobBackend", "RunOptions",
    "TrainJobBackend", "VolumeMount", "all_backends", "build_job", "build_pytorchjob", "build_trainjob", "connect",
    "delete_run_jobs", "get_backend", "job_name", "job_state", "required_permissions", "resolve_backend", "run_job",
    "trainjob_state",
]
