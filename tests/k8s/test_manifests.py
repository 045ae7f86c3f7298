"""Every manifest, rendered by the real kustomize, validated offline; pod security; the example job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from cdseg.launch import build_pytorchjob, build_trainjob
from cdseg.launch.config import LaunchConfig
from cdseg.launch.trainconfig import config_map

from .podsecurity import pod_specs, violations
from .schemas import ROOT, kustomize, load_yaml, validate

TARGETS = ["k8s/base", "k8s/overlays/kind", "k8s/overlays/gpu", "k8s/overlays/profile"]
#: the namespace each target puts everything in (the base names none: an overlay does)
NAMESPACES = {"k8s/base": None, "k8s/overlays/kind": "cdseg", "k8s/overlays/gpu": "cdseg",
              "k8s/overlays/profile": "kubeflow-user-example-com"}
LAUNCH_CONFIGS = ["k8s/overlays/kind/launch.yaml", "k8s/overlays/gpu/launch.yaml"]
EXAMPLE = "k8s/examples/pytorchjob-step0.yaml"
TRAINJOB_EXAMPLE = "k8s/examples/trainjob-step0.yaml"


def _objects() -> list[tuple[str, dict[str, Any]]]:
    out = [(t, o) for t in TARGETS for o in kustomize(t)]
    out += [(EXAMPLE, o) for o in load_yaml(EXAMPLE)]
    out += [(TRAINJOB_EXAMPLE, o) for o in load_yaml(TRAINJOB_EXAMPLE)]
    out += [("k8s/base/secret-s3.example.yaml", o) for o in load_yaml("k8s/base/secret-s3.example.yaml")]
    return out


def _id(item: tuple[str, dict[str, Any]]) -> str:
    where, obj = item
    return f"{where}:{obj['kind']}/{obj['metadata']['name']}"


def _launch_jobs() -> list[tuple[str, dict[str, Any]]]:
    jobs = []
    for path in LAUNCH_CONFIGS:
        cfg = LaunchConfig.model_validate(yaml.safe_load((ROOT / path).read_text()) | {"run": "r", "step": 1})
        jobs.append((path, build_pytorchjob(cfg.to_spec())))
        jobs.append((path + " (trainjob)", build_trainjob(cfg.to_spec())))
    return jobs


@pytest.mark.parametrize("target", TARGETS)
def test_renders(target: str) -> None:
    objects = kustomize(target)
    kinds = {o["kind"] for o in objects}
    assert {"ServiceAccount", "Role", "RoleBinding", "ConfigMap", "PersistentVolumeClaim"} <= kinds
    namespace = NAMESPACES[target]
    assert all(o["metadata"].get("namespace") == namespace for o in objects if o["kind"] != "Namespace")
    for binding in (o for o in objects if o["kind"] == "RoleBinding"):
        assert all(s.get("namespace") == namespace for s in binding["subjects"]), binding
    # only the standalone layout creates its namespace; a profile namespace belongs to its profile
    assert ("Namespace" in kinds) == (target in ("k8s/overlays/kind", "k8s/overlays/gpu"))


def test_no_namespace_is_hard_coded_in_the_base() -> None:
    for path in sorted((ROOT / "k8s/base").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                assert "namespace" not in doc, f"{path.name} sets a namespace at the top level"
                assert "namespace" not in doc.get("metadata", {}), f"{path.name} hard-codes a namespace"


def test_profile_overlay_binds_the_launcher_role_to_the_pipeline_runner() -> None:
    objects = kustomize("k8s/overlays/profile")
    role = next(o for o in objects if o["kind"] == "Role")
    bound = {(s["kind"], s["name"]) for o in objects if o["kind"] == "RoleBinding"
             and o["roleRef"]["name"] == role["metadata"]["name"] for s in o["subjects"]}
    assert ("ServiceAccount", "default-editor") in bound, "KFP runs profile pipelines as default-editor"


@pytest.mark.parametrize("target", TARGETS[1:])
def test_every_reference_exists_or_is_optional(target: str) -> None:
    objects = kustomize(target)
    have = {(o["kind"], o["metadata"]["name"]) for o in objects}
    cfg = LaunchConfig.model_validate(yaml.safe_load((ROOT / LAUNCH_CONFIGS[-1]).read_text()) | {"run": "r", "step": 1})
    pods = [o["spec"]["template"]["spec"] for o in objects if o["kind"] in ("Deployment", "Job")]
    pods += [r["template"]["spec"] for r in build_pytorchjob(cfg.to_spec())["spec"]["pytorchReplicaSpecs"].values()]
    for pod in pods:
        account = pod.get("serviceAccountName")
        assert account is None or ("ServiceAccount", account) in have, f"{target}: no ServiceAccount {account}"
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            for source in container.get("envFrom", []):
                for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                    if key in source:
                        ref = source[key]
                        assert ref.get("optional") or (kind, ref["name"]) in have, f"{target}: {kind} {ref['name']}"
            for env in container.get("env", []):
                for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                    ref = env.get("valueFrom", {}).get(key)
                    if ref:
                        assert ref.get("optional") or (kind, ref["name"]) in have, f"{target}: {kind} {ref['name']}"
        for volume in pod.get("volumes", []):
            claim = volume.get("persistentVolumeClaim")
            if claim and target != "k8s/overlays/kind":
                assert ("PersistentVolumeClaim", claim["claimName"]) in have, f"{target}: PVC {claim['claimName']}"


@pytest.mark.parametrize("item", _objects(), ids=_id)
def test_manifest_is_valid(item: tuple[str, dict[str, Any]]) -> None:
    if item[1]["kind"] == "PrometheusRule":
        pytest.skip("no PrometheusRule CRD schema offline; promtool checks and unit-tests its rules "
                    "(tests/metrics/test_alerts.py)")
    assert validate(item[1]) == []


@pytest.mark.parametrize("item", _launch_jobs(), ids=lambda i: i[0])
def test_launcher_job_from_overlay_settings_is_valid(item: tuple[str, dict[str, Any]]) -> None:
    assert validate(item[1]) == []


@pytest.mark.parametrize("item", _objects() + _launch_jobs(), ids=lambda i: f"{i[0]}:{i[1]['kind']}")
def test_pod_security(item: tuple[str, dict[str, Any]]) -> None:
    problems = [v for where, pod in pod_specs(item[1]) for v in violations(where, pod)]
    assert problems == []


def test_pod_security_check_catches_violations() -> None:
    job = _launch_jobs()[0][1]
    pod = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    container = pod["containers"][0]
    container["securityContext"]["allowPrivilegeEscalation"] = True
    del container["securityContext"]["readOnlyRootFilesystem"]
    del container["resources"]["limits"]["memory"]
    problems = violations("job", pod)
    assert any("allowPrivilegeEscalation" in p for p in problems)
    assert any("readOnlyRootFilesystem" in p for p in problems)
    assert any("memory in resources.limits" in p for p in problems)


def test_kind_overlay_has_no_podmonitor_and_gpu_has_pushgateway() -> None:
    kind = {(o["kind"], o["metadata"]["name"]) for o in kustomize("k8s/overlays/kind")}
    gpu = {(o["kind"], o["metadata"]["name"]) for o in kustomize("k8s/overlays/gpu")}
    assert not any(k == "PodMonitor" for k, _ in kind), "kind has no prometheus-operator CRDs"
    assert {("Deployment", "cdseg-pushgateway"), ("Service", "cdseg-pushgateway"), ("PodMonitor", "cdseg-trainer")} <= gpu
    defaults = next(o for o in kustomize("k8s/overlays/gpu") if o["metadata"]["name"] == "cdseg-defaults")
    assert defaults["data"]["CDSEG_METRICS__PUSHGATEWAY"] == "http://cdseg-pushgateway:9091"


def test_overlay_launch_configs_are_in_the_cluster_too() -> None:
    for target, path in zip(("k8s/overlays/kind", "k8s/overlays/gpu"), LAUNCH_CONFIGS, strict=True):
        cm = next(o for o in kustomize(target) if o["metadata"]["name"] == "cdseg-launch")
        assert cm["data"]["launch.yaml"] == (ROOT / path).read_text()


def test_monitors_carry_the_release_label_and_the_run_labels() -> None:
    gpu = kustomize("k8s/overlays/gpu")
    monitors = [o for o in gpu if o["kind"] in ("PodMonitor", "ServiceMonitor", "PrometheusRule")]
    assert {o["kind"] for o in monitors} == {"PodMonitor", "ServiceMonitor", "PrometheusRule"}
    assert all(o["metadata"]["labels"].get("release") for o in monitors), "kube-prometheus-stack selects by release"
    monitor = next(o for o in monitors if o["kind"] == "PodMonitor")
    cfg = LaunchConfig.model_validate(yaml.safe_load((ROOT / LAUNCH_CONFIGS[1]).read_text())
                                      | {"run": "r", "task": "222a", "step": 1})
    job = build_pytorchjob(cfg.to_spec())
    pod_labels = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["podTargetLabels"] == ["cdseg.io/run", "cdseg.io/task", "cdseg.io/step"]
    assert set(monitor["spec"]["podTargetLabels"]) <= set(pod_labels), "the launcher's pods carry every target label"


def test_grafana_sidecar_configmap_holds_the_dashboard() -> None:
    cm = next(o for o in kustomize("k8s/overlays/gpu") if o["kind"] == "ConfigMap"
              and o["metadata"]["name"] == "cdseg-grafana-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["data"]["cdseg-dashboard.json"] == (ROOT / "k8s/grafana/cdseg-dashboard.json").read_text()


def test_pushgateway_admits_only_cdseg_pods_and_prometheus() -> None:
    from pipelines.factory import BuildOptions

    policy = next(o for o in kustomize("k8s/overlays/gpu") if o["kind"] == "NetworkPolicy")
    deployment = next(o for o in kustomize("k8s/overlays/gpu") if o["kind"] == "Deployment")
    selected = deployment["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= selected.items()
    peers = policy["spec"]["ingress"][0]["from"]

    def admitted(labels: dict[str, str]) -> bool:
        return any("namespaceSelector" not in p and p["podSelector"]["matchLabels"].items() <= labels.items()
                   for p in peers)

    # the pipeline's task pods (which push and delete groups) and the launcher's trainer pods
    assert admitted(BuildOptions().extra_labels)
    job = _launch_jobs()[2][1]
    assert admitted(job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["metadata"]["labels"])
    assert not admitted({"app": "something-else"})
    prometheus = [p for p in peers if "namespaceSelector" in p]
    assert prometheus and prometheus[0]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels and Exists / DoesNotExist / In expressions) against pod labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        op, key = e["operator"], e["key"]
        if (op == "Exists" and key not in labels) or (op == "DoesNotExist" and key in labels) \
                or (op == "In" and labels.get(key) not in e["values"]):
            return False
    return True


def test_trainjob_pods_are_scraped_on_the_metrics_port_by_relabelling() -> None:
    from cdseg.launch.spec import JobSpec

    monitors = {o["metadata"]["name"]: o for o in kustomize("k8s/base") if o["kind"] == "PodMonitor"}
    trainjob = _launch_jobs()[3][1]
    replicated = trainjob["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    # the Trainer adds the JobSet labels to the pods it creates; the rest are the launcher's
    pod_labels = {**replicated["template"]["spec"]["template"]["metadata"]["labels"],
                  "jobset.sigs.k8s.io/jobset-name": trainjob["metadata"]["name"]}
    monitor = monitors["cdseg-trainjob"]
    assert _selects(monitor["spec"]["selector"], pod_labels)
    assert replicated["name"] == "node", "the relabelling keeps the container called node"
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert "port" not in endpoint and "portNumber" not in endpoint  # a TrainJob pod declares no ports
    address = next(r for r in endpoint["relabelings"] if r.get("targetLabel") == "__address__")
    port = JobSpec.model_fields["metrics_port"].default
    assert address["replacement"] == f"${{1}}:{port}"
    # a PyTorchJob pod (named ports) is scraped by cdseg-trainer only, never twice
    master = _launch_jobs()[2][1]["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["metadata"]["labels"]
    assert not _selects(monitor["spec"]["selector"], master)
    assert monitor["spec"]["podTargetLabels"] == monitors["cdseg-trainer"]["spec"]["podTargetLabels"]


def test_podmonitor_scrapes_the_trainer_metrics_port() -> None:
    monitor = next(o for o in kustomize("k8s/base") if o["kind"] == "PodMonitor" and o["metadata"]["name"] == "cdseg-trainer")
    job = _launch_jobs()[2][1]
    template = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]
    for key, value in monitor["spec"]["selector"]["matchLabels"].items():
        assert template["metadata"]["labels"][key] == value
    ports = {p["name"] for p in template["spec"]["containers"][0]["ports"]}
    endpoints = {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]}
    assert "metrics" in ports and ports <= endpoints


def test_example_job_is_what_the_launcher_builds() -> None:
    cfg = LaunchConfig.model_validate(yaml.safe_load((ROOT / LAUNCH_CONFIGS[0]).read_text()) | {"step": 0})
    spec = cfg.to_spec()
    (config, example) = load_yaml(EXAMPLE)
    assert [config, example] == [config_map(spec), build_pytorchjob(spec)], (
        "k8s/examples/pytorchjob-step0.yaml is stale; regenerate it (see its header)")
    (config, trainjob) = load_yaml(TRAINJOB_EXAMPLE)
    assert [config, trainjob] == [config_map(spec), build_trainjob(spec)], (
        "k8s/examples/trainjob-step0.yaml is stale; regenerate it (see its header)")


def test_kind_gpu_overlays_differ_as_intended() -> None:
    kind = yaml.safe_load((ROOT / LAUNCH_CONFIGS[0]).read_text())
    gpu = yaml.safe_load((ROOT / LAUNCH_CONFIGS[1]).read_text())
    assert kind["gpus"] == 0 and kind["replicas"] == 2 and "cpu" in kind["image"]
    gpu_job = _launch_jobs()[2][1]
    container = gpu_job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert container["resources"]["limits"]["nvidia.com/gpu"] == gpu["gpus"] and env["NCCL_DEBUG"] == "WARN"
    shm = next(v for v in gpu_job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["volumes"]
               if v["name"] == "shm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": gpu["shm_size"]}


def test_secret_example_holds_placeholders_only() -> None:
    (secret,) = load_yaml("k8s/base/secret-s3.example.yaml")
    assert all(v.startswith("REPLACE_WITH_") for v in secret["stringData"].values())
    assert not any(o["kind"] == "Secret" for t in TARGETS for o in kustomize(t)), "no Secret is shipped in a kustomization"


def test_no_manifest_file_is_left_out() -> None:
    used: set[Path] = set()
    for kust in (ROOT / "k8s").rglob("kustomization.yaml"):
        doc = yaml.safe_load(kust.read_text())
        for entry in doc.get("resources", []) + [f for g in doc.get("configMapGenerator", []) for f in g.get("files", [])]:
            path = (kust.parent / entry).resolve()
            used.add(path)
    loose = [p.relative_to(ROOT).as_posix() for p in (ROOT / "k8s").rglob("*.yaml")
             if p.name != "kustomization.yaml" and p.resolve() not in used and "grafana" not in p.parts
             and p.name not in ("secret-s3.example.yaml",) and "examples" not in p.parts]
    assert loose == [], "manifests not referenced by any kustomization (so never validated)"
