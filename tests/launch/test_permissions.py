"""The launcher calls exactly `REQUIRED_PERMISSIONS` (recorded against kmock), the verbs the Role grants
(tests/k8s/test_rbac.py checks the Role against the same constant)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from cdseg.launch import (
    REQUIRED_PERMISSIONS,
    ImagePullError,
    JobFailedError,
    JobSpec,
    all_backends,
    delete_run_jobs,
    required_permissions,
    run_job,
)
from cdseg.launch.trainconfig import config_map

from .cluster import CONFIGMAPS, FAST, FakeCluster

SPEC = JobSpec(run="rbac", step=0, task="222a", image="img", replicas=2)


def _verb(method: str, path: str, params: Any) -> tuple[str, str]:
    """(resource, verb) of one API request, the way the API server authorizes it."""
    parts = path.strip("/").split("/")
    if parts[0] == "api":        # /api/v1/namespaces/ns/<plural>[/<name>[/<sub>]]
        rest, group = parts[4:], ""
    else:                        # /apis/<group>/<version>/namespaces/ns/<plural>[/<name>[/<sub>]]
        rest, group = parts[5:], parts[1]
    plural, name, sub = rest[0], (rest[1] if len(rest) > 1 else None), (rest[2] if len(rest) > 2 else None)
    resource = (f"{group}/" if group else "") + plural + (f"/{sub}" if sub else "")
    watching = str(params.get("watch", "")).lower() == "true"
    verb = {"POST": "create", "DELETE": "delete", "PATCH": "patch", "PUT": "update"}.get(method)
    if verb is None:
        verb = "watch" if watching else ("get" if name else "list")
    return resource, verb


def _record(cluster: FakeCluster) -> dict[str, set[str]]:
    used: dict[str, set[str]] = {}
    for r in cluster.launcher_requests():
        resource, verb = _verb(r.method.value, r.url.path, r.params)
        used.setdefault(resource, set()).add(verb)
    return used


def test_launcher_calls_are_exactly_the_declared_permissions(cluster: FakeCluster) -> None:
    # every code path: success with log streaming, failure with log tail, adoption, image-pull check, deletion,
    # the pipeline's clean-up by run label
    backend = cluster.backend
    op = cluster.spawn(cluster.operator(SPEC.name, ["Created", "Running", "Succeeded"], log=b"ok\n"))
    run_job(SPEC, apis=cluster.apis(), backend=backend, options=dataclasses.replace(FAST, delete_on_success=True))
    op.result(10)

    failing = SPEC.replace(step=1)
    op = cluster.spawn(cluster.operator(failing.name, ["Created", "Running", "Failed"], log=b"boom\n"))
    with pytest.raises(JobFailedError):
        run_job(failing, apis=cluster.apis(), backend=backend, options=FAST)
    op.result(10)

    adopted = SPEC.replace(step=2)  # an earlier attempt's job and ConfigMap
    cluster.setup(lambda kmock: kmock.objects.__setitem__((cluster.jobs, "cdseg", adopted.name), backend.build(adopted)))
    cluster.setup(lambda kmock: kmock.objects.__setitem__((CONFIGMAPS, "cdseg", adopted.name), config_map(adopted)))
    op = cluster.spawn(cluster.operator(adopted.name, ["Running", "Succeeded"]))
    assert run_job(adopted, apis=cluster.apis(), backend=backend, options=FAST).adopted
    op.result(10)

    pulling = SPEC.replace(step=3)

    async def bad_image() -> None:
        await cluster.wait_for_job(pulling.name)
        await cluster.create_pod(pulling.name, waiting="ImagePullBackOff")

    op = cluster.spawn(bad_image())
    with pytest.raises(ImagePullError):
        run_job(pulling, apis=cluster.apis(), backend=backend, options=FAST)
    op.result(10)

    left = SPEC.replace(step=4)
    cluster.setup(lambda kmock: kmock.objects.__setitem__((cluster.jobs, "cdseg", left.name), backend.build(left)))
    deleted = delete_run_jobs(SPEC.run, "cdseg", apis=cluster.apis(), backends=[backend])
    assert left.name in deleted and cluster.job(left.name) is None
    assert cluster.left_behind() == [], "every job and ConfigMap of the run is gone"

    used = _record(cluster)
    declared = {k: set(v) for k, v in required_permissions([backend]).items()}
    assert used == declared, "required_permissions (and so the Role) must be exactly what the launcher calls"


def test_required_permissions_cover_every_backend() -> None:
    assert required_permissions(all_backends()) == REQUIRED_PERMISSIONS
    assert {"kubeflow.org/pytorchjobs", "trainer.kubeflow.org/trainjobs", "pods", "pods/log",
            "configmaps"} == set(REQUIRED_PERMISSIONS)
