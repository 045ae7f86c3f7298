"""`JobBackend`: what differs between the kinds of training job the launcher can run, and nothing else.

A backend builds the custom object for a `JobSpec`, reads its status into a `JobState`, and names
the pods and container to follow, the permissions it needs and how to install its operator.
Following, logs, adoption, cancellation and errors (`follow`, `runner`, `kube`) are written once
against this protocol. A third backend is one more module beside `pytorchjob.py` and `trainjob.py`
plus one line in `BACKENDS` below. Plain dicts only: this module does not import `kubernetes`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from cdseg.launch.spec import JobSpec

#: verbs the launcher uses on every backend's resource (list: the pipeline's clean-up by run label)
JOB_VERBS = frozenset({"create", "get", "list", "watch", "delete"})


@dataclass(frozen=True)
class JobState:
    """Where a job stands: `phase` is Pending, Created, Running, Restarting, Suspended, Succeeded or Failed."""

    phase: str
    reason: str = ""
    message: str = ""

    @property
    def finished(self) -> bool:
        """Succeeded or Failed: no further transition will happen."""
        return self.phase in ("Succeeded", "Failed")


class JobBackend(Protocol):
    """A training-job kind: its resource, how to build and read it, which pods and container to follow."""

    name: str          # the --launch.backend value
    group: str
    version: str
    plural: str
    kind: str
    container: str     # the trainer container, whose log is the job's log
    install_hint: str  # how to install the operator that serves `kind`
    expires: bool      # whether the object deletes itself some time after it finished (a TTL)

    def build(self, spec: JobSpec) -> dict[str, Any]:
        """The custom object to create for `spec`."""
        ...

    def state(self, obj: dict[str, Any]) -> JobState:
        """The job's state from its `.status`."""
        ...

    def leader_pod_selector(self, spec: JobSpec) -> dict[str, str]:
        """Labels of the pod whose log is the job's log (rank 0) of the job `spec` describes."""
        ...

    def pod_selector(self, name: str) -> dict[str, str]:
        """Labels of all the job's pods."""
        ...


def job_object(backend: JobBackend, spec: JobSpec, labels: dict[str, str], job_spec: dict[str, Any]) -> dict[str, Any]:
    """The job object of any backend: its kind, the spec's name and namespace, labels, and annotations with the
    run's name and a hash of `job_spec` (to notice an adopted job that was built differently)."""
    import hashlib
    import json

    from cdseg.launch.spec import ANNOTATION_PIPELINE_RUN, ANNOTATION_RUN, ANNOTATION_SPEC_HASH

    digest = hashlib.sha256(json.dumps(job_spec, sort_keys=True).encode()).hexdigest()[:16]
    return {
        "apiVersion": f"{backend.group}/{backend.version}",
        "kind": backend.kind,
        "metadata": {
            "name": spec.name,
            "namespace": spec.namespace,
            "labels": labels,
            "annotations": {**spec.annotations, ANNOTATION_RUN: spec.run,
                            ANNOTATION_PIPELINE_RUN: spec.pipeline_run_name, ANNOTATION_SPEC_HASH: digest},
        },
        "spec": job_spec,
    }


def resource(backend: JobBackend) -> str:
    """`group/plural`, as RBAC and the messages name it."""
    return f"{backend.group}/{backend.plural}"


def delete_command(backend: JobBackend, namespace: str, name: str) -> str:
    """The kubectl command that deletes one job of this backend by hand."""
    return f"kubectl delete {backend.plural}.{backend.group} -n {namespace} {name}"


def permissions(backend: JobBackend) -> dict[str, frozenset[str]]:
    """(resource, verbs) the launcher needs for this backend's jobs."""
    return {resource(backend): JOB_VERBS}


#: --launch.backend values besides `auto`, in the order `auto` tries them (Trainer v2 first)
BACKEND_NAMES = ("trainjob", "pytorchjob")


def get_backend(name: str) -> JobBackend:
    """The backend called `name` (`trainjob` or `pytorchjob`)."""
    from cdseg.errors import ConfigError

    if name == "trainjob":
        from cdseg.launch.trainjob import TrainJobBackend

        return TrainJobBackend()
    if name == "pytorchjob":
        from cdseg.launch.pytorchjob import PyTorchJobBackend

        return PyTorchJobBackend()
    raise ConfigError(f"launch backend {name!r} is not one of {', '.join(BACKEND_NAMES)} or auto; "
                      "pass --backend trainjob, pytorchjob or auto")


def all_backends() -> list[JobBackend]:
    """Every backend, in `BACKEND_NAMES` order."""
    return [get_backend(n) for n in BACKEND_NAMES]
