"""Job specs and `cdseg launch --dry-run` commands shared by the launcher and manifest-validation tests."""

from __future__ import annotations

from typing import Any

import yaml

from cdseg.launch import JobSpec, VolumeMount

BASE = JobSpec(run="exp1", step=1, task="222a", image="ghcr.io/cdseg/cdseg:0.1.0",
               train_args=("--method", "mib-cd", "--data.dataset", "s3://b/prep", "--output", "s3://b/runs/exp1"))
VARIANTS = {
    "single-cpu": BASE,
    "two-cpu-pods": BASE.replace(replicas=2),
    "gpus": BASE.replace(replicas=4, nproc_per_node=8, gpus=8, shm_size="32Gi",
                                node_selector={"nvidia.com/gpu.present": "true"},
                                tolerations=({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},),
                                volumes=[VolumeMount(claim="cdseg-data", mount_path="/data"),
                                         VolumeMount(claim="cache", mount_path="/cache")],
                                image_pull_secrets=("regcred",), priority_class="high", queue="team-a",
                                active_deadline=3600, ttl=None, env={"NCCL_DEBUG": "INFO"}),
    "no-secrets": BASE.replace(s3_secret="", defaults_config_map="", service_account=""),
}

#: `cdseg launch` arguments of a 2-pod GPU job, printed instead of submitted
DRY_RUN_ARGS = ["launch", "--run", "exp1", "--step", "1", "--task", "222a", "--replicas", "2", "--gpus", "2",
                "--nproc-per-node", "2", "--shm-size", "8Gi", "--node-selector", '{"pool": "gpu"}',
                "--tolerations", '[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]',
                "--backend", "pytorchjob", "--dry-run", "--", "--method", "mib-cd", "--output", "s3://b/runs/exp1"]
#: the same job as a TrainJob on a namespaced runtime
DRY_RUN_TRAINJOB_ARGS = [*DRY_RUN_ARGS[:DRY_RUN_ARGS.index("--backend")], "--backend", "trainjob", "--runtime",
                         "cdseg-torch", "--runtime-kind", "TrainingRuntime", "--queue", "team-a",
                         *DRY_RUN_ARGS[DRY_RUN_ARGS.index("--dry-run"):]]


def dry_run_output(out: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(ConfigMap, job) that `cdseg launch --dry-run` printed, in that order (kubectl apply -f creates both)."""
    config_map, job = yaml.safe_load_all(out)
    assert config_map["kind"] == "ConfigMap" and job["kind"] in ("TrainJob", "PyTorchJob")
    return config_map, job


def pods_config(config_map: dict[str, Any]) -> dict[str, Any]:
    """The train config the pods read (the ConfigMap's file)."""
    return dict(yaml.safe_load(config_map["data"]["train.yaml"]))
