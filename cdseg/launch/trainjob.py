"""The `trainjob` backend: a `JobSpec` as a Kubeflow Trainer v2 `TrainJob` (`trainer.kubeflow.org/v1alpha1`).

The pods come from the referenced runtime (`torch-distributed` by default: one replicated job
`node`, container `node`, torchrun's `PET_*` variables injected); the TrainJob sets `trainer`
(image, command, env, nodes, processes, resources) and patches the rest of the pod (volumes, mounts,
security context, placement, labels) through one `runtimePatches` entry under the manager
`cdseg.io/launcher`. What the v2.3 patch API cannot carry is said where it is dropped (see `build`).
Implements `cdseg.launch.backend.JobBackend`. Plain dicts only: this module does not import `kubernetes`.
"""

from __future__ import annotations

from typing import Any

from cdseg.errors import ConfigError
from cdseg.launch.backend import JobState, job_object
from cdseg.launch.pod import pod_annotations, pod_spec
from cdseg.launch.spec import COMMON_LABELS, LABEL_METRICS, JobSpec

GROUP = "trainer.kubeflow.org"
#: the runtime's replicated job and container that run the trainer (the stock torch runtimes' names)
NODE = "node"
#: our key in `runtimePatches` (Kueue and webhooks write their own entries; we touch only this one)
PATCH_MANAGER = "cdseg.io/launcher"
#: how to install Trainer v2 and its stock runtimes; repeated in docs/kubernetes.md
INSTALL_TRAINER = (
    'kubectl apply --server-side -k "github.com/kubeflow/trainer.git/manifests/overlays/manager?ref=v2.3.0" && '
    'kubectl apply --server-side -k "github.com/kubeflow/trainer.git/manifests/overlays/runtimes?ref=v2.3.0"'
)
#: pod-spec fields of the trainer pod that a v2.3 runtime patch accepts
_PATCHABLE_POD = ("securityContext", "serviceAccountName", "nodeSelector", "tolerations", "imagePullSecrets",
                  "volumes", "affinity", "terminationGracePeriodSeconds")
#: Kueue's label for a WorkloadPriorityClass (a TrainJob's pods cannot name a PriorityClass through a patch)
KUEUE_PRIORITY = "kueue.x-k8s.io/priority-class"


class TrainJobBackend:
    """`trainer.kubeflow.org/v1alpha1` TrainJob on a (Cluster)TrainingRuntime; `numNodes` pods, container `node`."""

    name = "trainjob"
    group = GROUP
    version = "v1alpha1"
    plural = "trainjobs"
    kind = "TrainJob"
    container = NODE
    install_hint = f"Kubeflow Trainer v2 is not installed; install it (and its runtimes) with: {INSTALL_TRAINER}"
    expires = False  # a TrainJob has no TTL: the launcher deletes it once it has finished

    def build(self, spec: JobSpec) -> dict[str, Any]:
        """The TrainJob manifest for `spec`.

        Dropped, because a v2.3 TrainJob cannot express them: container ports (the PodMonitor's
        named ports), `envFrom` (the optional `cdseg-defaults` ConfigMap; pass `--env` instead),
        `imagePullPolicy`, `automountServiceAccountToken` (the `cdseg-trainer` account disables it),
        per-pod `priorityClassName` (mapped to Kueue's WorkloadPriorityClass label) and the
        restart policy (the runtime's JobSet failure policy decides).
        """
        if spec.elastic_min is not None:
            raise ConfigError(f"elastic_min={spec.elastic_min}: a TrainJob has no elastic policy (Trainer v2 removed "
                              "it); use --backend pytorchjob for elastic training, or drop --elastic-min")
        labels = {**COMMON_LABELS, **spec.labels, **spec.identity_labels()}
        if spec.queue:
            labels["kueue.x-k8s.io/queue-name"] = spec.queue
        if spec.priority_class:
            labels[KUEUE_PRIORITY] = spec.priority_class
        pod = pod_spec(spec, NODE)
        container = pod["containers"][0]
        trainer: dict[str, Any] = {
            "image": spec.image,
            "command": spec.train_command(),
            "env": container["env"],
            "numNodes": spec.replicas,
            "numProcPerNode": spec.nproc_per_node,
            "resourcesPerNode": container["resources"],
        }
        patch_pod = {k: pod[k] for k in _PATCHABLE_POD if k in pod}
        patch_pod["containers"] = [{"name": NODE, "volumeMounts": container["volumeMounts"],
                                    "securityContext": container["securityContext"]}]
        replicated_job = {"name": NODE, "template": {"spec": {"template": {
            "metadata": {"labels": {**labels, LABEL_METRICS: "true"},
                         "annotations": pod_annotations(spec)},
            "spec": patch_pod,
        }}}}
        job_spec: dict[str, Any] = {
            "runtimeRef": {"name": spec.runtime, "kind": spec.runtime_kind, "apiGroup": GROUP},
            "trainer": trainer,
            "runtimePatches": [{"manager": PATCH_MANAGER, "trainingRuntimeSpec": {"template": {"spec": {
                "replicatedJobs": [replicated_job]}}}}],
        }
        if spec.active_deadline is not None:
            job_spec["activeDeadlineSeconds"] = spec.active_deadline
        return job_object(self, spec, labels, job_spec)

    def state(self, obj: dict[str, Any]) -> JobState:
        """The job's state from its conditions and `jobsStatus` (see `trainjob_state`)."""
        return trainjob_state(obj)

    def leader_pod_selector(self, spec: JobSpec) -> dict[str, str]:
        """Node 0 (rank 0) of the TrainJob: JobSet's and the Indexed Job's labels."""
        return {**self.pod_selector(spec.name), "jobset.sigs.k8s.io/replicatedjob-name": NODE,
                "batch.kubernetes.io/job-completion-index": "0"}

    def pod_selector(self, name: str) -> dict[str, str]:
        """Every pod of TrainJob `name` (its JobSet has the TrainJob's name)."""
        return {"jobset.sigs.k8s.io/jobset-name": name}


def trainjob_state(obj: dict[str, Any]) -> JobState:
    """Failed or Complete (True) win; then Suspended (True); then Running when a replicated job has active pods."""
    status = obj.get("status") or {}
    true = {c.get("type"): c for c in status.get("conditions") or [] if str(c.get("status")) == "True"}
    for cond_type, phase in (("Failed", "Failed"), ("Complete", "Succeeded"), ("Suspended", "Suspended")):
        if cond_type in true:
            cond = true[cond_type]
            return JobState(phase, cond.get("reason") or "", cond.get("message") or "")
    jobs = status.get("jobsStatus") or []
    if any(int(j.get("active") or 0) + int(j.get("ready") or 0) > 0 for j in jobs):
        return JobState("Running")
    return JobState("Created" if obj.get("metadata") else "Pending")


def build_trainjob(spec: JobSpec) -> dict[str, Any]:
    """The `trainer.kubeflow.org/v1alpha1` TrainJob for one step."""
    return TrainJobBackend().build(spec)
