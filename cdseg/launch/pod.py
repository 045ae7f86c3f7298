"""The trainer pod every backend runs: hardened, one container, memory-backed /dev/shm, writable /tmp and /cache.

Backends place it differently (a PyTorchJob's replica templates hold it whole; a TrainJob splits it
between `trainer` and a runtime patch), but its content is defined once, here.
"""

from __future__ import annotations

from typing import Any

from cdseg.launch.spec import JobSpec
from cdseg.launch.trainconfig import ANNOTATION_CONFIG_HASH, config_digest, config_volume


def pod_annotations(spec: JobSpec) -> dict[str, str]:
    """Annotations of every trainer pod: no service-mesh sidecar, and the digest of the train config it reads."""
    # a sidecar proxy breaks the rendezvous between the pods
    return {"sidecar.istio.io/inject": "false", ANNOTATION_CONFIG_HASH: config_digest(spec)}


def pod_spec(spec: JobSpec, container_name: str) -> dict[str, Any]:
    """The pod spec of every trainer pod: hardened, memory-backed /dev/shm, writable /tmp and /cache, the train
    config mounted read-only from the job's ConfigMap."""
    config_vol, config_mount = config_volume(spec)
    mounts = [{"name": "shm", "mountPath": "/dev/shm"}, {"name": "tmp", "mountPath": "/tmp"}, config_mount]
    volumes: list[dict[str, Any]] = [
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": spec.shm_size}},
        {"name": "tmp", "emptyDir": {"sizeLimit": spec.tmp_size}},
        config_vol,
    ]
    if not any(v.mount_path == "/cache" for v in spec.mounts):
        mounts.append({"name": "cache", "mountPath": "/cache"})
        volumes.append({"name": "cache", "emptyDir": {"sizeLimit": spec.cache_size}})
    for i, vol in enumerate(spec.mounts):
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
        "name": container_name,
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": spec.train_command(),
        "env": trainer_env(spec),
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


def trainer_env(spec: JobSpec) -> list[dict[str, Any]]:
    """The trainer container's environment: pod identity, writable caches, NCCL, S3 credentials by reference."""
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
        # optional: a job whose data and outputs are on a PVC needs no credentials, so a missing Secret must not
        # keep its pods from starting; with s3:// URIs and no credentials the first S3 call fails in one line
        env += [{"name": key, "valueFrom": {"secretKeyRef": {"name": spec.s3_secret, "key": key, "optional": True}}}
                for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")]
    return env
