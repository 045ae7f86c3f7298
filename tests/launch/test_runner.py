"""`run_job` against kmock (a Kubernetes API emulator) with a fake operator, for each backend (the `cluster` fixture)."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time

import kmock as km
import pytest

from cdseg.errors import UserError
from cdseg.launch import (
    CRDNotInstalledError,
    ForbiddenError,
    ImagePullError,
    JobCancelledError,
    JobConflictError,
    JobFailedError,
    JobSpec,
    JobTimeoutError,
    LaunchError,
    NamespaceNotFoundError,
    PodConfigError,
    run_job,
)
from cdseg.launch.trainconfig import config_map

from .cluster import FAST, FakeCluster

SPEC = JobSpec(run="exp1", step=1, task="222a", image="img", replicas=2,
               train_args=("--method", "mib-cd", "--data.dataset", "s3://b/prep", "--output", "s3://b/runs/exp1"))
NAME = SPEC.name


def methods(cluster: FakeCluster) -> list[str]:
    return [f"{r.method.value} {r.url.path}" for r in cluster.launcher_requests()]


def job_calls(cluster: FakeCluster, method: str) -> list[str]:
    return [m for m in methods(cluster) if m.startswith(method + " ") and f"/{cluster.backend.plural}" in m]


def test_success_streams_log_and_keeps_job_for_ttl(cluster: FakeCluster) -> None:
    """A PyTorchJob is kept for its TTL; a TrainJob, which has none, is deleted once it has succeeded."""
    op = cluster.spawn(cluster.operator(NAME, ["Created", "Running", "Succeeded"], log=b"epoch 1 loss 0.5\ndone\n"))
    lines: list[str] = []
    result = run_job(SPEC, apis=cluster.apis(), backend=cluster.backend, options=FAST, log_sink=lines.append)
    op.result(10)
    assert result.state.phase == "Succeeded" and not result.adopted
    assert result.name == NAME and result.namespace == "cdseg"
    posted = [r.data for r in cluster.launcher_requests() if r.method.value == "POST"]
    assert posted == [config_map(SPEC), cluster.backend.build(SPEC)], "the pods' config first, then the job"
    if cluster.backend.expires:
        assert cluster.job(NAME) is not None, "a succeeded job is kept (its TTL removes it) unless delete_on_success"
        assert not job_calls(cluster, "DELETE")
    else:
        assert cluster.job(NAME) is None and cluster.left_behind() == [] and len(job_calls(cluster, "DELETE")) == 1 and result.deleted
    deadline = time.monotonic() + 5
    while "done" not in lines and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lines[:2] == ["epoch 1 loss 0.5", "done"]
    assert any("log" in m and f"/{cluster.pod_name(NAME)}/" in m for m in methods(cluster)), "rank 0's log"


def test_success_deletes_when_asked(cluster: FakeCluster) -> None:
    op = cluster.spawn(cluster.operator(NAME, ["Created", "Running", "Succeeded"]))
    result = run_job(SPEC, apis=cluster.apis(), backend=cluster.backend, options=dataclasses.replace(FAST, delete_on_success=True))
    op.result(10)
    assert result.deleted and cluster.job(NAME) is None


def test_failure_raises_with_reason_and_log_tail_and_deletes(cluster: FakeCluster) -> None:
    log = b"".join(f"line {i}\n".encode() for i in range(100)) + b"RuntimeError: CUDA out of memory\n"
    op = cluster.spawn(cluster.operator(NAME, ["Created", "Running", "Failed"], log=log, reason="PyTorchJobFailed",
                                        message="PyTorchJob exp1 is failed because 1 Master replica(s) failed."))
    with pytest.raises(JobFailedError) as info:
        run_job(SPEC, apis=cluster.apis(), backend=cluster.backend, options=FAST)
    op.result(10)
    err = info.value
    assert err.reason == "PyTorchJobFailed"
    assert err.log_tail[-1] == "RuntimeError: CUDA out of memory" and len(err.log_tail) == 50
    assert "1 Master replica(s) failed" in str(err) and "CUDA out of memory" in str(err)
    assert not isinstance(err, UserError), "a failed training job is not bad input (exit 1)"
    assert cluster.job(NAME) is None and cluster.left_behind() == [] and len(job_calls(cluster, "DELETE")) == 1


def test_restarting_then_succeeded(cluster: FakeCluster) -> None:
    op = cluster.spawn(cluster.operator(NAME, ["Created", "Running", "Restarting", "Running", "Succeeded"]))
    result = run_job(SPEC, apis=cluster.apis(), backend=cluster.backend, options=FAST)
    op.result(10)
    assert result.state.phase == "Succeeded"
    if cluster.backend.expires:
        final = cluster.job(NAME)
        assert final is not None
        kinds = {(c["type"], c["status"]) for c in final["status"]["conditions"]}
        assert ("Running", "False") in kinds and ("Succeeded", "True") in kinds


def test_timeout_deletes_the_job(cluster: FakeCluster) -> None:
    op = cluster.spawn(cluster.operator(NAME, ["Created", "Running"]))
    start = time.monotonic()
    with pytest.raises(JobTimeoutError, match="did not finish within 1s"):
        run_job(SPEC, apis=cluster.apis(), backend=cluster.backend, options=dataclasses.replace(FAST, timeout_s=1.0))
    op.result(10)
    assert time.monotonic() - start < 6
    assert cluster.job(NAME) is None and cluster.left_behind() == [] and len(job_calls(cluster, "DELETE")) == 1


def test_watch_expiry_relists_and_continues(cluster: FakeCluster) -> None:
    cluster.expire_watches = 2
    op = cluster.spawn(cluster.operator(NAME, ["Created", "Running", "Succeeded"], delay=0.4))
    result = run_job(SPEC, apis=cluster.apis(), backend=cluster.backend, options=FAST)
    op.result(10)
    assert result.state.phase == "Succeeded" and cluster.expire_watches == 0
    gets = [m for m in job_calls(cluster, "GET") if m.endswith("/" + NAME)]
    assert len(gets) >= 3, "each 410 Gone is followed by a fresh GET (re-list) of the job"


def test_retry_adopts_the_existing_job(cluster: FakeCluster) -> None:
    body = cluster.backend.build(SPEC)
    body["status"] = {"conditions": [{"type": "Created", "status": "True"}, {"type": "Running", "status": "True"}]}
    cluster.setup(lambda kmock: kmock.objects.__setitem__((cluster.jobs, "cdseg", NAME), body))
    op = cluster.spawn(cluster.operator(NAME, ["Running", "Succeeded"]))
    result = run_job(SPEC, apis=cluster.apis(), backend=cluster.backend, options=FAST)
    op.result(10)
    assert result.adopted and result.state.phase == "Succeeded"
    assert len(job_calls(cluster, "POST")) == 1, "one create attempt (409), then adoption; no second job"


def test_adopting_a_job_built_differently_warns(cluster: FakeCluster, caplog: pytest.LogCaptureFixture) -> None:
    body = cluster.backend.build(SPEC.replace(image="older-image"))
    cluster.setup(lambda kmock: kmock.objects.__setitem__((cluster.jobs, "cdseg", NAME), body))
    op = cluster.spawn(cluster.operator(NAME, ["Running", "Succeeded"]))
    with caplog.at_level("WARNING", logger="cdseg.launch"):
        assert run_job(SPEC, apis=cluster.apis(), backend=cluster.backend, options=FAST).adopted
    op.result(10)
    assert "created with other settings" in caplog.text


def test_retry_replaces_a_failed_job(cluster: FakeCluster) -> None:
    body = cluster.backend.build(SPEC)
    body["status"] = {"conditions": [{"type": "Failed", "status": "True", "reason": "old"}]}
    cluster.setup(lambda kmock: kmock.objects.__setitem__((cluster.jobs, "cdseg", NAME), body))

    async def later() -> None:
        while cluster.job(NAME) is not None and "status" in (cluster.job(NAME) or {}):
            await __import__("asyncio").sleep(0.02)
        await cluster.operator(NAME, ["Created", "Running", "Succeeded"])

    op = cluster.spawn(later())
    result = run_job(SPEC, apis=cluster.apis(), backend=cluster.backend, options=FAST)
    op.result(10)
    assert not result.adopted and result.state.phase == "Succeeded"
    # the failed one is deleted; a TrainJob (no TTL) also once it has succeeded
    assert len(job_calls(cluster, "POST")) == 2 and len(job_calls(cluster, "DELETE")) == 1 + (not cluster.backend.expires)


def test_name_taken_by_another_run_is_not_adopted(cluster: FakeCluster) -> None:
    body = cluster.backend.build(SPEC.replace(run="other"))
    body["metadata"]["name"] = NAME
    cluster.setup(lambda kmock: kmock.objects.__setitem__((cluster.jobs, "cdseg", NAME), body))
    with pytest.raises(JobConflictError, match="belongs to run 'other'"):
        run_job(SPEC, apis=cluster.apis(), backend=cluster.backend, options=FAST)
    assert cluster.job(NAME) is not None, "someone else's job is never deleted"
    assert not job_calls(cluster, "DELETE")


def test_cancel_event_deletes_the_job(cluster: FakeCluster) -> None:
    cancel = threading.Event()
    op = cluster.spawn(cluster.operator(NAME, ["Created", "Running"]))
    threading.Timer(0.8, cancel.set).start()
    with pytest.raises(JobCancelledError):
        run_job(SPEC, apis=cluster.apis(), backend=cluster.backend, options=FAST, cancel=cancel)
    op.result(10)
    assert cluster.job(NAME) is None and cluster.left_behind() == [] and len(job_calls(cluster, "DELETE")) == 1


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_deletes_the_job(cluster: FakeCluster, sig: signal.Signals) -> None:
    op = cluster.spawn(cluster.operator(NAME, ["Created", "Running"]))
    timer = threading.Timer(0.8, os.kill, args=(os.getpid(), sig))
    timer.start()
    before = signal.getsignal(sig)
    with pytest.raises(JobCancelledError, match=sig.name):
        run_job(SPEC, apis=cluster.apis(), backend=cluster.backend, options=dataclasses.replace(FAST, handle_signals=True))
    op.result(10)
    assert signal.getsignal(sig) is before, "the previous handler is restored"
    assert cluster.job(NAME) is None and cluster.left_behind() == []


def test_crd_not_installed(cluster: FakeCluster) -> None:
    # what a real API server answers for an unknown resource type
    cluster.setup(lambda kmock: kmock["post", cluster.jobs] << 404 << b"404 page not found\n")
    with pytest.raises(CRDNotInstalledError) as info:
        run_job(SPEC, apis=cluster.apis(), backend=cluster.backend, options=FAST)
    assert isinstance(info.value, UserError)
    assert "kubectl apply --server-side -k" in str(info.value)
    assert ("ref=v1.9.0" if cluster.backend.name == "pytorchjob" else "ref=v2.3.0") in str(info.value)
    assert "--backend auto" in str(info.value)


def test_namespace_missing(cluster: FakeCluster) -> None:
    status = {"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": 404, "reason": "NotFound",
              "message": 'namespaces "cdseg" not found', "details": {"name": "cdseg", "kind": "namespaces"}}
    cluster.setup(lambda kmock: kmock["post", cluster.jobs] << 404 << status)
    with pytest.raises(NamespaceNotFoundError, match="kubectl create namespace cdseg"):
        run_job(SPEC, apis=cluster.apis(), backend=cluster.backend, options=FAST)
    assert cluster.config_map(NAME) is None


def test_rbac_forbidden_on_create(cluster: FakeCluster) -> None:
    status = {"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": 403, "reason": "Forbidden",
              "message": 'pytorchjobs.kubeflow.org is forbidden: User "system:serviceaccount:kubeflow:pipeline-runner" '
                         'cannot create resource "pytorchjobs" in API group "kubeflow.org" in the namespace "cdseg"'}
    cluster.setup(lambda kmock: kmock["post", cluster.jobs] << 403 << status)
    with pytest.raises(ForbiddenError) as info:
        run_job(SPEC, apis=cluster.apis(), backend=cluster.backend, options=FAST)
    err = info.value
    res = f"{cluster.backend.group}/{cluster.backend.plural}"
    assert (err.verb, err.resource, err.namespace) == ("create", res, "cdseg")
    assert f"'create' on {res} in namespace 'cdseg'" in str(err)
    # (kmock stores a POSTed job whatever a reaction answers, so only the ConfigMap can be checked here)
    assert cluster.config_map(NAME) is None, "the ConfigMap made for the job is deleted: nothing partial stays"


def test_rbac_forbidden_on_pods_deletes_the_job(cluster: FakeCluster) -> None:
    status = {"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": 403, "reason": "Forbidden",
              "message": 'pods is forbidden: cannot list resource "pods"'}
    cluster.setup(lambda kmock: kmock["get", km.resource("v1/pods"), km.name(None)] << 403 << status)
    with pytest.raises(ForbiddenError) as info:
        run_job(SPEC, apis=cluster.apis(), backend=cluster.backend, options=FAST)
    assert len(job_calls(cluster, "POST")) == 1
    assert (info.value.verb, info.value.resource) == ("list", "pods")
    assert cluster.job(NAME) is None and cluster.left_behind() == [], "no job is left behind by an error path"


def test_image_pull_failure(cluster: FakeCluster) -> None:
    async def pending() -> None:
        await cluster.wait_for_job(NAME)
        await cluster.set_conditions(NAME, [{"type": "Created", "status": "True"}])
        await cluster.create_pod(NAME, waiting="ImagePullBackOff", image="ghcr.io/nope/cdseg:404")

    op = cluster.spawn(pending())
    with pytest.raises(ImagePullError, match="ghcr.io/nope/cdseg:404") as info:
        run_job(SPEC, apis=cluster.apis(), backend=cluster.backend, options=FAST)
    op.result(10)
    assert isinstance(info.value, UserError) and "ImagePullBackOff" in str(info.value)
    assert cluster.job(NAME) is None and cluster.left_behind() == []


def test_missing_secret_surfaces(cluster: FakeCluster) -> None:
    async def pending() -> None:
        await cluster.wait_for_job(NAME)
        await cluster.create_pod(NAME, waiting="CreateContainerConfigError")

    op = cluster.spawn(pending())
    with pytest.raises(PodConfigError, match="CreateContainerConfigError"):
        run_job(SPEC, apis=cluster.apis(), backend=cluster.backend, options=FAST)
    op.result(10)
    assert cluster.job(NAME) is None and cluster.left_behind() == []


def _failing_first(n: int) -> object:
    """A kmock filter true for the first `n` requests it sees."""
    seen: list[int] = []

    def check(req: km.Request) -> bool:
        if req.id in seen:
            return True
        if len(seen) < n:
            seen.append(req.id)
            return True
        return False

    return check


UNAVAILABLE = {"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": 503, "reason": "ServiceUnavailable",
               "message": "etcdserver: leader changed"}


def test_api_outage_mid_job_is_waited_out(cluster: FakeCluster) -> None:
    cluster.setup(lambda kmock: kmock["get", cluster.jobs, km.name(NAME)][_failing_first(3)] << 503 << UNAVAILABLE)
    op = cluster.spawn(cluster.operator(NAME, ["Created", "Running", "Succeeded"], delay=0.3))
    result = run_job(SPEC, apis=cluster.apis(), backend=cluster.backend, options=FAST)
    op.result(10)
    assert result.state.phase == "Succeeded"


def test_api_outage_beyond_the_grace_fails_and_deletes(cluster: FakeCluster) -> None:
    cluster.setup(lambda kmock: kmock["get", cluster.jobs, km.name(NAME)] << 503 << UNAVAILABLE)
    op = cluster.spawn(cluster.operator(NAME, ["Created", "Running"]))
    with pytest.raises(LaunchError, match="kept failing"):
        run_job(SPEC, apis=cluster.apis(), backend=cluster.backend, options=dataclasses.replace(FAST, outage_grace_s=1.0))
    op.result(10)
    assert cluster.job(NAME) is None and cluster.left_behind() == []


def test_the_config_map_lives_and_dies_with_the_job(cluster: FakeCluster) -> None:
    """The pods' train config: created before the job, owned by it (the garbage collector deletes it with the job
    whoever deletes the job), rewritten for a job that replaces a failed one, deleted with the job."""
    cluster.assign_uids()
    seen: dict[str, object] = {}

    async def look() -> None:
        job = await cluster.wait_for_job(NAME)
        seen["cm"] = cluster.config_map(NAME)
        seen["job"] = job
        await cluster.operator(NAME, ["Created", "Running", "Succeeded"], delay=0.3)

    op = cluster.spawn(look())
    run_job(SPEC, apis=cluster.apis(), backend=cluster.backend, options=dataclasses.replace(FAST, delete_on_success=True))
    op.result(10)
    cm = seen["cm"]
    assert isinstance(cm, dict), "the ConfigMap exists when the job does (its pods never wait for it)"
    assert cm["data"] == config_map(SPEC)["data"] and cm["metadata"]["labels"]["cdseg.io/run"] == "exp1"
    owners = [r for r in cluster.launcher_requests() if r.method.value == "PATCH" and "/configmaps/" in r.url.path]
    assert len(owners) == 1
    (ref,) = owners[0].data["metadata"]["ownerReferences"]
    assert ref["kind"] == cluster.backend.kind and ref["name"] == NAME and ref["uid"] == f"uid-{NAME}"
    assert cluster.left_behind() == []


def test_an_earlier_attempts_config_map_is_rewritten(cluster: FakeCluster) -> None:
    stale = config_map(SPEC.replace(train_args=["--method", "ft"]))
    cluster.setup(lambda kmock: kmock.objects.__setitem__((km.resource("v1/configmaps"), "cdseg", NAME), stale))
    op = cluster.spawn(cluster.operator(NAME, ["Created", "Running", "Failed"]))
    with pytest.raises(JobFailedError):
        run_job(SPEC, apis=cluster.apis(), backend=cluster.backend, options=FAST)
    op.result(10)
    patched = [r.data for r in cluster.launcher_requests() if r.method.value == "PATCH" and "/configmaps/" in r.url.path]
    assert patched and patched[0]["data"] == config_map(SPEC)["data"]
    assert cluster.left_behind() == []


def test_forbidden_configmaps_stop_before_the_job(cluster: FakeCluster) -> None:
    """A Role without the configmaps rule: one line naming the resource, no job created, nothing to clean up."""
    status = {"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": 403, "reason": "Forbidden",
              "message": 'configmaps is forbidden: cannot create resource "configmaps" in the namespace "cdseg"'}
    cluster.setup(lambda kmock: kmock["post", km.resource("v1/configmaps")] << 403 << status)
    with pytest.raises(ForbiddenError) as info:
        run_job(SPEC, apis=cluster.apis(), backend=cluster.backend, options=FAST)
    assert (info.value.verb, info.value.resource) == ("create", "configmaps")
    assert not job_calls(cluster, "POST"), "the job is never created without its config"
    assert not [m for m in methods(cluster) if m.startswith("DELETE ")], "nothing was made, nothing is deleted"
