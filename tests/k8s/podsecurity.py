"""The pod-security rules every workload of the project meets (restricted profile + resources)."""

from __future__ import annotations

from typing import Any


def pod_specs(obj: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(where, pod spec) of every pod template an object holds."""
    kind, name = obj.get("kind"), obj.get("metadata", {}).get("name")
    spec = obj.get("spec") or {}
    if kind == "PyTorchJob":
        return [(f"{kind}/{name} {rtype}", r["template"]["spec"]) for rtype, r in spec["pytorchReplicaSpecs"].items()]
    if kind == "TrainJob":
        return [(f"{kind}/{name}", trainjob_pod(obj))]
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"):
        return [(f"{kind}/{name}", spec["template"]["spec"])]
    if kind == "CronJob":
        return [(f"{kind}/{name}", spec["jobTemplate"]["spec"]["template"]["spec"])]
    if kind == "Pod":
        return [(f"{kind}/{name}", spec)]
    return []


def trainjob_pod(obj: dict[str, Any]) -> dict[str, Any]:
    """The trainer pod a TrainJob asks for: its runtime patch's pod spec, with `trainer`'s image and resources
    in the `node` container (what the runtime's own template adds is the runtime's business)."""
    pod: dict[str, Any] = {}
    for patch in obj["spec"].get("runtimePatches") or []:
        for rjob in patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]:
            if rjob["name"] == "node":
                pod = dict(rjob["template"]["spec"]["template"]["spec"])
    containers = [dict(c) for c in pod.get("containers") or [{"name": "node"}]]
    trainer = obj["spec"].get("trainer") or {}
    for c in containers:
        if c["name"] == "node":
            c.update({"image": trainer.get("image"), "resources": trainer.get("resourcesPerNode") or {}})
    return {**pod, "containers": containers}


def violations(where: str, pod: dict[str, Any]) -> list[str]:
    """Broken rules of one pod spec (empty when it complies)."""
    out = []
    psc = pod.get("securityContext") or {}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            out.append(f"{where}: {key}")
    if any("hostPath" in v for v in pod.get("volumes") or []):
        out.append(f"{where}: hostPath volume")
    emptydirs = {v["name"]: v["emptyDir"] for v in pod.get("volumes") or [] if "emptyDir" in v}
    for c in (pod.get("initContainers") or []) + (pod.get("containers") or []):
        at = f"{where} container {c['name']}"
        sc = c.get("securityContext") or {}
        if sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is not True:
            out.append(f"{at}: runAsNonRoot is not true")
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            out.append(f"{at}: runs as uid 0")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{at}: allowPrivilegeEscalation is not false")
        if sc.get("privileged"):
            out.append(f"{at}: privileged")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            out.append(f"{at}: capabilities not dropped (drop: [ALL])")
        if (sc.get("capabilities") or {}).get("add"):
            out.append(f"{at}: adds capabilities")
        seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"{at}: seccompProfile is not RuntimeDefault")
        if sc.get("readOnlyRootFilesystem") is not True:
            out.append(f"{at}: readOnlyRootFilesystem is not true")
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts") or []}
        if "/tmp" not in mounts or mounts["/tmp"] not in emptydirs:
            out.append(f"{at}: no writable emptyDir at /tmp (the root file system is read-only)")
        for name, ed in emptydirs.items():
            if name in mounts.values() and not ed.get("sizeLimit"):
                out.append(f"{at}: emptyDir {name} has no sizeLimit")
        res = c.get("resources") or {}
        for part in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if r not in (res.get(part) or {}):
                    out.append(f"{at}: no {r} in resources.{part}")
    return out
