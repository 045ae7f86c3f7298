"""Launch one incremental step as a Kubernetes training job (Kubeflow PyTorchJob v1).

    spec = JobSpec(run="exp1", step=1, task="222a", image="ghcr.io/cdseg/cdseg:0.1.0",
                   train_args=["--method", "mib-cd", "--data.root", "s3://b/prep", "--output", "s3://b/runs/exp1"])
    build_pytorchjob(spec)          # the manifest (a dict)
    run_job(spec)                   # create or adopt, follow, stream the log; JobResult or a LaunchError

The only package that imports `kubernetes` (lazily: building a spec does not need it).
"""

from cdseg.launch.errors import (
    INSTALL_OPERATOR,
    ClusterSetupError,
    CRDNotInstalledError,
    ForbiddenError,
    ImagePullError,
    JobCancelledError,
    JobConflictError,
    JobFailedError,
    JobTimeoutError,
    JobVanishedError,
    KubeConfigError,
    LaunchError,
    NamespaceNotFoundError,
    PodConfigError,
)
from cdseg.launch.kube import REQUIRED_PERMISSIONS, KubeApis, connect
from cdseg.launch.pytorchjob import JobBuilder, JobState, PyTorchJobBuilder, build_pytorchjob, job_state
from cdseg.launch.runner import JobResult, RunOptions, run_job
from cdseg.launch.spec import JobSpec, VolumeMount, job_name

__all__ = [
    "INSTALL_OPERATOR", "REQUIRED_PERMISSIONS", "CRDNotInstalledError", "ClusterSetupError", "ForbiddenError",
    "ImagePullError", "JobBuilder", "JobCancelledError", "JobConflictError", "JobFailedError", "JobResult", "JobSpec",
    "JobState", "JobTimeoutError", "JobVanishedError", "KubeApis", "KubeConfigError", "LaunchError",
    "NamespaceNotFoundError", "PodConfigError", "PyTorchJobBuilder", "RunOptions", "VolumeMount", "build_pytorchjob",
    "connect", "job_name", "job_state", "run_job",
]
