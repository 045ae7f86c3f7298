"""Turn a `JobSpec` into a Kubeflow Training Operator v1 `PyTorchJob`, and read its status.

`JobBuilder` is the seam for other backends (a Trainer v2 `TrainJob` builder implements the same
protocol). Plain dicts only: this module does not import `kubernetes`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Protocol

from cdseg.launch.spec import ANNOTATION_RUN, ANNOTATION_SPEC_HASH, COMMON_LABELS, LABEL_METRICS, JobSpec

CONTAINER = "pytorch"  # the operator requires a container of this name


@dataclass(frozen=True)
class JobState:
    """Where a job stands: `phase` is Pending, Created, Running, Restarting, Succeeded, Failed or Suspended."""

    phase: str
    reason: str = ""
    message: str = ""

    @property
    def finished(self) -> bool:
        """Succeeded or Failed: no further transition will happen."""
        return self.phase in ("Succeeded", "Failed")


class JobBuilder(Protocol):
    """A training-job backend: the resource it creates, how to build it and how to read its status."""

    group: str
    version: str
    plural: str
    kind: str

    def build(self, spec: JobSpec) -> dict[str, Any]:
        """The custom object to create for `spec`."""
        ...

    def state(self, obj: dict[str, Any]) -> JobState:
        """The job's state from its `.status`."""
        ...

    def master_pod_selector(self, name: str) -> dict[str, str]:
        """Labels of the pod whose log is the job's log (rank 0)."""
        ...

    def pod_selector(self, name: str) -> dict[str, str]:
        """Labels of all the job's pods."""
        ...


class PyTorchJobBuilder:
    """`kubeflow.org/v1` PyTorchJob: a Master (rank 0) and `replicas - 1` Workers, one `pytorch` container each."""

    group = "kubeflow.org"
    version = "v1"
    plural = "pytorchjobs"
    kind = "PyTorchJob"

    def build(self, spec: JobSpec) -> dict[str, Any]:
        """The PyTorchJob manifest for `spec`."""
        labels = {**COMMON_LABELS, **spec.labels, **spec.identity_labels()}
        if spec.queue:
            labels["kueue.x-k8s.io/queue-name"] = spec.queue
        run_policy: dict[str, Any] = {"cleanPodPolicy": spec.clean_pod_policy, "backoffLimit": spec.backoff_limit}
        if spec.active_deadline_s is not None:
            run_policy["activeDeadlineSeconds"] = spec.active_deadline_s
        if spec.ttl_s is not None:
            run_policy["ttlSecondsAfterFinished"] = spec.ttl_s
        replica_specs: dict[str, Any] = {"Master": self._replica(spec, 1, labels)}
        if spec.replicas > 1:
            replica_specs["Worker"] = self._replica(spec, spec.replicas - 1, labels)
        job_spec = {
            "nprocPerNode": str(spec.nproc_per_node),  # a string in the CRD
            "runPolicy": run_policy,
            "pytorchReplicaSpecs": replica_specs,
        }
        digest = hashlib.sha256(json.dumps(job_spec, sort_keys=True).encode()).hexdigest()[:16]
        return {
            "apiVersion": f"{self.group}/{self.version}",
            "kind": self.kind,
            "metadata": {
                "name": spec.name,
                "namespace": spec.namespace,
                "labels": labels,
                "annotations": {**spec.annotations, ANNOTATION_RUN: spec.run, ANNOTATION_SPEC_HASH: digest},
            },
            "spec": job_spec,
        }

    def _replica(self, spec: JobSpec, replicas: int, labels: dict[str, str]) -> dict[str, Any]:
        return {
            "replicas": replicas,
            "restartPolicy": spec.restart_policy,
            "template": {
                "metadata": {
                    "labels": {**labels, LABEL_METRICS: "true"},
                    # a sidecar proxy breaks the rendezvous between master and workers
                    "annotations": {"sidecar.istio.io/inject": "false"},
                },
                "spec": pod_spec(spec),
            },
        }

    def state(self, obj: dict[str, Any]) -> JobState:
        """The job's state from its status conditions (see `job_state`)."""
        return job_state(obj)

    def master_pod_selector(self, name: str) -> dict[str, str]:
        """The Master replica 0 (rank 0) pod of job `name`."""
        return {"training.kubeflow.org/job-name": name, "training.kubeflow.org/replica-type": "master",
                "training.kubeflow.org/replica-index": "0"}

    def pod_selector(self, name: str) -> dict[str, str]:
        """Every pod of job `name`."""
        return {"training.kubeflow.org/job-name": name}


def pod_spec(spec: JobSpec) -> dict[str, Any]:
    """The pod template spec shared by Master and Workers: hardened, memory-backed /dev/shm, writable /tmp and /cache."""
    mounts = [{"name": "shm", "mountPath": "/dev/shm"}, {"name": "tmp", "mountPath": "/tmp"}]
    volumes: list[dict[str, Any]] = [
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": spec.shm_size}},
        {"name": "tmp", "emptyDir": {"sizeLimit": spec.tmp_size}},
    ]
    if not any(v.mount_path == "/cache" for v in spec.volumes):
        mounts.append({"name": "cache", "mountPath": "/cache"})
        volumes.append({"name": "cache", "emptyDir": {"sizeLimit": spec.cache_size}})
    for i, vol in enumerate(spec.volumes):
        mount: dict[str, Any] = {"name": f"pvc-{i}", "mountPath": vol.mount_path}
        if vol.read_only:
            mount["readOnly"] = True
        if vol.sub_path:
            mount["subPath"] = vol.sub_path
        mounts.append(mount)
        volumes.append({"name": f"pvc-{i}", "persistentVolumeClaim": {"claimName": vol.claim, "readOnly": vol.read_only}})

    resources: dict[str, Any] = {
        "requests": {"cpu": spec.cpu, "memory": spec.memory},
        "limits": {"cpu": spec.cpu_limit or spec.cpu, "memory": spec.memory},
    }
    if spec.gpus:
        resources["limits"]["nvidia.com/gpu"] = spec.gpus
        resources["requests"]["nvidia.com/gpu"] = spec.gpus

    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": spec.train_command(),
        "env": _env(spec),
        # local rank r serves /metrics on metrics_port + r (the PodMonitor scrapes these names)
        "ports": [{"name": "metrics" if r == 0 else f"metrics-{r}", "containerPort": spec.metrics_port + r,
                   "protocol": "TCP"} for r in range(spec.nproc_per_node)],
        "resources": resources,
        "volumeMounts": mounts,
        "securityContext": container_security_context(),
    }
    if spec.defaults_config_map:
        container["envFrom"] = [{"configMapRef": {"name": spec.defaults_config_map, "optional": True}}]

    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,  # the trainer never talks to the API server
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": spec.run_as_user,
            "runAsGroup": spec.run_as_user,
            "fsGroup": spec.run_as_user,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    if spec.service_account:
        pod["serviceAccountName"] = spec.service_account
    if spec.node_selector:
        pod["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod["tolerations"] = [dict(t) for t in spec.tolerations]
    if spec.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": s} for s in spec.image_pull_secrets]
    if spec.priority_class:
        pod["priorityClassName"] = spec.priority_class
    return pod


def container_security_context() -> dict[str, Any]:
    """Restricted pod-security profile: non-root, no escalation, no capabilities, read-only root."""
    return {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _env(spec: JobSpec) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
    plain = {
        "CDSEG_LOG_FORMAT": "json",
        "CDSEG_METRICS__PORT": str(spec.metrics_port),
        "CDSEG_STORAGE__CACHE_DIR": "/cache/cdseg",
        # the root file system is read-only: every cache goes to a writable emptyDir
        "HOME": "/tmp",
        "XDG_CACHE_HOME": "/cache",
        "TORCH_HOME": "/cache/torch",
        "HF_HOME": "/cache/huggingface",
        "TRITON_CACHE_DIR": "/cache/triton",
        "MPLCONFIGDIR": "/tmp/matplotlib",
    }
    if spec.gpus:
        plain.update({
            "NCCL_DEBUG": "WARN",
            # a failed collective aborts the process (the pod restarts) instead of hanging
            "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",
        })
    plain.update(spec.env)
    env += [{"name": k, "value": v} for k, v in plain.items()]
    if spec.s3_secret:
        env += [{"name": key, "valueFrom": {"secretKeyRef": {"name": spec.s3_secret, "key": key}}}
                for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")]
    return env


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
    return PyTorchJobBuilder().build(spec)
