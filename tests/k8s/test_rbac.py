"""RBAC: the Role grants exactly `REQUIRED_PERMISSIONS` (what the launcher calls: tests/launch/test_permissions.py),
nothing cluster-wide; the trainer pods get no API access."""

from __future__ import annotations

import pytest

from cdseg.launch import REQUIRED_PERMISSIONS, JobSpec, build_pytorchjob, build_trainjob

from .schemas import kustomize

TARGETS = ["k8s/base", "k8s/overlays/kind", "k8s/overlays/gpu"]
SPEC = JobSpec(run="rbac", step=0, task="222a", image="img", replicas=2)


@pytest.mark.parametrize("target", TARGETS)
def test_role_grants_exactly_the_required_permissions(target: str) -> None:
    objs = kustomize(target)
    roles = [o for o in objs if o["kind"] == "Role"]
    assert len(roles) == 1
    granted: dict[str, set[str]] = {}
    for rule in roles[0]["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
        assert not rule.get("resourceNames") and not rule.get("nonResourceURLs")
        for group in rule["apiGroups"]:
            for res in rule["resources"]:
                key = f"{group}/{res}" if group else res
                granted.setdefault(key, set()).update(rule["verbs"])
    assert granted == {k: set(v) for k, v in REQUIRED_PERMISSIONS.items()}


@pytest.mark.parametrize("target", TARGETS)
def test_nothing_cluster_wide(target: str) -> None:
    objs = kustomize(target)
    assert not [o for o in objs if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    for binding in (o for o in objs if o["kind"] == "RoleBinding"):
        assert binding["roleRef"]["kind"] == "Role"
        role_names = {o["metadata"]["name"] for o in objs if o["kind"] == "Role"}
        assert binding["roleRef"]["name"] in role_names
        accounts = {o["metadata"]["name"] for o in objs if o["kind"] == "ServiceAccount"}
        assert {s["name"] for s in binding["subjects"]} <= accounts


def test_trainer_account_has_no_token_and_no_role() -> None:
    objs = kustomize("k8s/base")
    trainer = next(o for o in objs if o["kind"] == "ServiceAccount" and o["metadata"]["name"] == "cdseg-trainer")
    assert trainer["automountServiceAccountToken"] is False
    bound = {s["name"] for o in objs if o["kind"] == "RoleBinding" for s in o["subjects"]}
    assert "cdseg-trainer" not in bound
    pod = build_pytorchjob(SPEC)["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    assert pod["serviceAccountName"] == "cdseg-trainer" and pod["automountServiceAccountToken"] is False


def test_trainjob_pods_use_the_trainer_account() -> None:
    (patch,) = build_trainjob(SPEC)["spec"]["runtimePatches"]
    (node,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    # a runtime patch cannot set automountServiceAccountToken: the cdseg-trainer account disables it
    assert node["template"]["spec"]["template"]["spec"]["serviceAccountName"] == "cdseg-trainer"
