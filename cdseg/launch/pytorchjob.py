"""The `pytorchjob` backend: a `JobSpec` as a Kubeflow Training Operator v1 (legacy) `PyTorchJob`.

Implements `cdseg.launch.backend.JobBackend`. Plain dicts only: this module does not import `kubernetes`.
"""

from __future__ import annotations

from typing import Any

from cdseg.launch.backend import JobState, job_object
from cdseg.launch.errors import INSTALL_OPERATOR
from cdseg.launch.pod import pod_annotations, pod_spec
from cdseg.launch.spec import COMMON_LABELS, LABEL_METRICS, JobSpec

CONTAINER = "pytorch"  # the operator requires a container of this name


class PyTorchJobBackend:
    """`kubeflow.org/v1` PyTorchJob: a Master (rank 0) and `replicas - 1` Workers, one `pytorch` container each."""

    name = "pytorchjob"
    group = "kubeflow.org"
    version = "v1"
    plural = "pytorchjobs"
    kind = "PyTorchJob"
    container = CONTAINER
    install_hint = f"the Kubeflow Training Operator v1 (legacy) is not installed; install it with: {INSTALL_OPERATOR}"
    expires = True  # runPolicy.ttlSecondsAfterFinished

    def build(self, spec: JobSpec) -> dict[str, Any]:
        """The PyTorchJob manifest for `spec`."""
        labels = {**COMMON_LABELS, **spec.labels, **spec.identity_labels()}
        if spec.queue:
            labels["kueue.x-k8s.io/queue-name"] = spec.queue
        run_policy: dict[str, Any] = {"cleanPodPolicy": spec.clean_pod_policy, "backoffLimit": spec.backoff_limit}
        if spec.active_deadline is not None:
            run_policy["activeDeadlineSeconds"] = spec.active_deadline
        if spec.ttl is not None:
            run_policy["ttlSecondsAfterFinished"] = spec.ttl
        job_spec: dict[str, Any] = {"nprocPerNode": str(spec.nproc_per_node), "runPolicy": run_policy}  # a string
        if spec.elastic_min is not None:
            # elastic: Workers only, rendezvous over c10d on Worker 0; a lost node shrinks the job down to
            # minReplicas instead of failing it, and the agents restart the ranks up to maxRestarts times
            job_spec["elasticPolicy"] = {"rdzvBackend": "c10d", "minReplicas": spec.elastic_min,
                                         "maxReplicas": spec.elastic_max or spec.replicas,
                                         "maxRestarts": spec.elastic_max_restarts}
            job_spec["pytorchReplicaSpecs"] = {"Worker": self._replica(spec, spec.replicas, labels)}
        else:
            replica_specs: dict[str, Any] = {"Master": self._replica(spec, 1, labels)}
            if spec.replicas > 1:
                replica_specs["Worker"] = self._replica(spec, spec.replicas - 1, labels)
            job_spec["pytorchReplicaSpecs"] = replica_specs
        return job_object(self, spec, labels, job_spec)

    def _replica(self, spec: JobSpec, replicas: int, labels: dict[str, str]) -> dict[str, Any]:
        return {
            "replicas": replicas,
            "restartPolicy": spec.restart_policy,
            "template": {
                "metadata": {
                    "labels": {**labels, LABEL_METRICS: "true"},
                    "annotations": pod_annotations(spec),
                },
                "spec": pod_spec(spec, CONTAINER),
            },
        }

    def state(self, obj: dict[str, Any]) -> JobState:
        """The job's state from its status conditions (see `job_state`)."""
        return job_state(obj)

    def leader_pod_selector(self, spec: JobSpec) -> dict[str, str]:
        """Rank 0's pod: Master 0, or Worker 0 of an elastic job (which has Workers only)."""
        role = "worker" if spec.elastic_min is not None else "master"
        return {"training.kubeflow.org/job-name": spec.name, "training.kubeflow.org/replica-type": role,
                "training.kubeflow.org/replica-index": "0"}

    def pod_selector(self, name: str) -> dict[str, str]:
        """Every pod of job `name`."""
        return {"training.kubeflow.org/job-name": name}


def job_state(obj: dict[str, Any]) -> JobState:
    """The job's state: a True Failed or Succeeded anywhere wins, else the latest True condition.

    The operator keeps `Running` in the list (status False) after the job finishes, so neither
    `conditions[-1]` nor the first `Running` entry can be trusted.
    """
    conditions = (obj.get("status") or {}).get("conditions") or []
    true = [c for c in conditions if str(c.get("status")) == "True"]
    for terminal in ("Failed", "Succeeded"):
        for cond in true:
            if cond.get("type") == terminal:
                return JobState(terminal, cond.get("reason") or "", cond.get("message") or "")
    if not true:
        return JobState("Pending")
    indexed = sorted(enumerate(true), key=lambda ic: (ic[1].get("lastTransitionTime") or "", ic[0]))
    latest = indexed[-1][1]
    return JobState(str(latest.get("type")), latest.get("reason") or "", latest.get("message") or "")


def build_pytorchjob(spec: JobSpec) -> dict[str, Any]:
    """The `kubeflow.org/v1` PyTorchJob for one step."""
    return PyTorchJobBackend().build(spec)
