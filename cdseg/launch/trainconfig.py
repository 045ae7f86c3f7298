"""The pods' training config: resolved once by the launcher, stored in a ConfigMap that lives and dies with
the job, mounted read-only at `CONFIG_PATH`; the pods run `cdseg train --config CONFIG_PATH`.

The ConfigMap has the job's name and labels (so a run's clean-up finds it by the run label), is created
before the job (its pods never wait for it), and then names the job as its owner, so that the cluster's
garbage collector removes it with the job whoever deletes the job (a TTL, kubectl); the launcher deletes
it itself too. `CDSEG_*` variables in the pods (the `cdseg-defaults` ConfigMap, `--env`) still win over
the file, as they win over any `--config` file; the launcher's own environment does not enter it.
Plain dicts only: this module does not import `kubernetes`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from cdseg.launch.backend import JobBackend
    from cdseg.launch.spec import JobSpec

#: where the pods see the file, the ConfigMap key that holds it, and the pod volume that mounts it
CONFIG_DIR = "/etc/cdseg"
CONFIG_KEY = "train.yaml"
CONFIG_PATH = f"{CONFIG_DIR}/{CONFIG_KEY}"
CONFIG_VOLUME = "train-config"
#: pod-template annotation with the file's digest: a job adopted from an attempt with another config is noticed
ANNOTATION_CONFIG_HASH = "cdseg.io/train-config-sha256"


def resolve_train_config(train_args: Sequence[str], task: str, step: int) -> dict[str, Any]:
    """The TrainConfig `cdseg train <train_args>` would run, as a plain mapping; `--task.name` / `--task.step`
    come from `task` / `step` when the arguments do not give them. Reads a `--config` file here, not in the pods."""
    from cdseg.config import load_config
    from cdseg.config.args import parse_args
    from cdseg.train.config import TrainConfig

    config_file, cli = parse_args(TrainConfig, train_args, "train")
    if task:
        cli.setdefault("task.name", task)
    cli.setdefault("task.step", step)
    cfg = load_config(TrainConfig, config_file=config_file, cli=cli, environ={})
    return dict(cfg.model_dump(mode="json"))


def config_text(spec: JobSpec) -> str:
    """The file the pods read: the resolved TrainConfig as YAML."""
    return yaml.safe_dump(spec.train_config, sort_keys=False)


def config_digest(spec: JobSpec) -> str:
    """sha256 of the file (its first 16 hex digits)."""
    return hashlib.sha256(config_text(spec).encode()).hexdigest()[:16]


def config_volume(spec: JobSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pod volume, container mount) of the file: the job's ConfigMap, read-only at CONFIG_DIR."""
    volume = {"name": CONFIG_VOLUME, "configMap": {"name": spec.name, "items": [{"key": CONFIG_KEY, "path": CONFIG_KEY}]}}
    return volume, {"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR, "readOnly": True}


def config_map(spec: JobSpec) -> dict[str, Any]:
    """The ConfigMap holding the file: the job's name, namespace and identity labels."""
    from cdseg.launch.spec import ANNOTATION_PIPELINE_RUN, ANNOTATION_RUN, COMMON_LABELS

    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": spec.name, "namespace": spec.namespace,
                     "labels": {**COMMON_LABELS, **spec.labels, **spec.identity_labels()},
                     "annotations": {ANNOTATION_RUN: spec.run, ANNOTATION_PIPELINE_RUN: spec.pipeline_run_name,
                                     ANNOTATION_CONFIG_HASH: config_digest(spec)}},
        "data": {CONFIG_KEY: config_text(spec)},
    }


def owner_reference(backend: JobBackend, job: dict[str, Any]) -> dict[str, Any]:
    """The ownerReference that makes the garbage collector delete the ConfigMap with `job` (a created object)."""
    meta = job.get("metadata") or {}
    return {"apiVersion": f"{backend.group}/{backend.version}", "kind": backend.kind, "name": meta.get("name"),
            "uid": meta.get("uid"), "blockOwnerDeletion": False}
