"""What the launcher raises: one class per thing a user or a cluster admin can act on.

Classes that also derive from `cdseg.errors.UserError` are fixable by the person running the
command (exit code 2): a missing CRD, namespace, permission, image or kubeconfig. A failed or
timed-out training job is not bad input; those exit 1.
"""

from __future__ import annotations

from cdseg.errors import CdsegError, UserError

#: how to install the Kubeflow Training Operator v1 (PyTorchJob); repeated in docs/kubernetes.md
INSTALL_OPERATOR = (
    'kubectl apply --server-side -k "github.com/kubeflow/training-operator.git/manifests/overlays/standalone?ref=v1.9.0"'
)


class LaunchError(CdsegError):
    """Base class of every launcher error."""


class ClusterSetupError(LaunchError, UserError):
    """The cluster, namespace, permissions or image are not what the job needs (exit 2)."""


class KubeConfigError(ClusterSetupError):
    """No usable kubeconfig / in-cluster credentials, or the API server cannot be reached."""


class CRDNotInstalledError(ClusterSetupError):
    """The job resource of the chosen backend (or of every backend, for `auto`) is unknown to the API server."""


class NamespaceNotFoundError(ClusterSetupError):
    """The target namespace does not exist."""


class ForbiddenError(ClusterSetupError):
    """RBAC refused a verb on a resource; `verb`, `resource` and `namespace` say which."""

    def __init__(self, message: str, *, verb: str, resource: str, namespace: str) -> None:
        super().__init__(message)
        self.verb, self.resource, self.namespace = verb, resource, namespace


class ImagePullError(ClusterSetupError):
    """A trainer pod cannot pull its image (ErrImagePull / ImagePullBackOff / InvalidImageName)."""


class PodConfigError(ClusterSetupError):
    """A trainer pod cannot start: a Secret, ConfigMap or volume it names is missing."""


class JobConflictError(ClusterSetupError):
    """A job of the same name exists but belongs to another run or step."""


class JobFailedError(LaunchError):
    """The job ended Failed; carries the operator's reason and the leader's (rank 0's) log tail."""

    def __init__(self, message: str, *, name: str, reason: str, log_tail: list[str]) -> None:
        super().__init__(message)
        self.name, self.reason, self.log_tail = name, reason, log_tail


class JobTimeoutError(LaunchError):
    """The job did not finish within the launcher's timeout (it has been deleted)."""


class JobPendingError(LaunchError):
    """The job's pods did not start within the pending timeout (unschedulable, queued); it has been deleted."""


class JobCancelledError(LaunchError):
    """The launcher was cancelled (SIGTERM, Ctrl-C or its cancel event); the job has been deleted."""


class JobVanishedError(LaunchError):
    """The job was deleted by someone else (or by its TTL) while the launcher was following it."""
