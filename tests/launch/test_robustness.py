"""What the launcher says and does when the cluster misbehaves, for each backend: pods that cannot be
scheduled, a queued (suspended) job, crash loops, 5xx/429 on create, 409 then 404, `auto` discovery.
Every case ends with no job left behind."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest

from cdseg.errors import UserError
from cdseg.launch import (
    CRDNotInstalledError,
    JobPendingError,
    JobSpec,
    LaunchError,
    PyTorchJobBackend,
    TrainJobBackend,
    resolve_backend,
    run_job,
)

from .cluster import FAST, FakeCluster, make_cluster

SPEC = JobSpec(run="robust", step=0, task="222a", image="img", replicas=2)
NAME = SPEC.name
QUICK = dataclasses.replace(FAST, retry_backoff_s=0.05)


def job_calls(cluster: FakeCluster, method: str) -> list[str]:
    return [f"{r.method.value} {r.url.path}" for r in cluster.launcher_requests()
            if r.method.value == method and f"/{cluster.backend.plural}" in r.url.path]


def status(code: int, reason: str, message: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": code, "reason": reason,
            "message": message}


def test_unschedulable_is_reported_once_and_the_pending_timeout_deletes(
        cluster: FakeCluster, caplog: pytest.LogCaptureFixture) -> None:
    why = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."

    async def stuck() -> None:
        await cluster.wait_for_job(NAME)
        await cluster.create_pod(NAME, running=False, unschedulable=why)

    op = cluster.spawn(stuck())
    start = time.monotonic()
    with caplog.at_level("WARNING", logger="cdseg.launch"), pytest.raises(JobPendingError) as info:
        run_job(SPEC, apis=cluster.apis(), backend=cluster.backend,
                options=dataclasses.replace(QUICK, pending_timeout_s=1.5))
    op.result(10)
    assert 1.5 <= time.monotonic() - start < 8
    message = str(info.value)
    assert why in message and "--pending-timeout" in message and "lower --gpus" in message
    assert "\n" not in message and not isinstance(info.value, UserError)
    reports = [r for r in caplog.records if "cannot be scheduled" in r.getMessage()]
    assert len(reports) == 1, "each problem is reported once, not on every pod check"
    assert cluster.job(NAME) is None and cluster.left_behind() == [] and len(job_calls(cluster, "DELETE")) == 1


def test_a_queued_job_is_reported_and_times_out(cluster: FakeCluster, caplog: pytest.LogCaptureFixture) -> None:
    if isinstance(cluster.backend, PyTorchJobBackend):
        phases, reason = ["Created", "Suspended"], "PyTorchJobSuspended"
    else:
        phases, reason = ["Suspended"], "Suspended"
    op = cluster.spawn(cluster.operator(NAME, phases, reason=reason, message="Workload is waiting for quota",
                                        delay=0.1))
    with caplog.at_level("WARNING", logger="cdseg.launch"), pytest.raises(JobPendingError, match="Kueue"):
        run_job(SPEC, apis=cluster.apis(), backend=cluster.backend,
                options=dataclasses.replace(QUICK, pending_timeout_s=1.0))
    op.result(10)
    assert sum("is suspended" in r.getMessage() for r in caplog.records) == 1
    assert cluster.job(NAME) is None and cluster.left_behind() == []


def test_a_started_job_is_not_failed_by_the_pending_timeout(cluster: FakeCluster) -> None:
    op = cluster.spawn(cluster.operator(NAME, ["Created", "Running", "Running", "Running", "Succeeded"], delay=0.5))
    result = run_job(SPEC, apis=cluster.apis(), backend=cluster.backend,
                     options=dataclasses.replace(QUICK, pending_timeout_s=1.0))
    op.result(10)
    assert result.state.phase == "Succeeded"


def test_crash_loop_is_reported_once(cluster: FakeCluster, caplog: pytest.LogCaptureFixture) -> None:
    async def crashing() -> None:
        await cluster.wait_for_job(NAME)
        await cluster.create_pod(NAME, waiting="CrashLoopBackOff")
        await __import__("asyncio").sleep(2.5)  # watch windows last at least 1 s: leave room for pod checks
        await cluster.operator(NAME, ["Failed"], reason="Failed", message="back-off limit reached")

    op = cluster.spawn(crashing())
    with caplog.at_level("WARNING", logger="cdseg.launch"), pytest.raises(LaunchError):
        run_job(SPEC, apis=cluster.apis(), backend=cluster.backend, options=QUICK)
    op.result(10)
    assert sum("keeps crashing" in r.getMessage() for r in caplog.records) == 1
    assert cluster.job(NAME) is None and cluster.left_behind() == []


def test_500_on_create_is_retried_then_succeeds(cluster: FakeCluster) -> None:
    down = status(500, "InternalError", 'Internal error occurred: failed calling webhook "validate.kueue.x-k8s.io"')
    cluster.reject_creates(500, down, times=2)

    async def after_the_rejections() -> None:  # the operator must not see the briefly stored rejected objects
        await asyncio.sleep(0.6)
        await cluster.operator(NAME, ["Created", "Running", "Succeeded"])

    op = cluster.spawn(after_the_rejections())
    result = run_job(SPEC, apis=cluster.apis(), backend=cluster.backend, options=QUICK)
    op.result(10)
    assert result.state.phase == "Succeeded" and not result.adopted
    assert len(job_calls(cluster, "POST")) == 3


@pytest.mark.parametrize("code", [500, 429])
def test_5xx_or_429_forever_gives_one_line_and_leaves_nothing(cluster: FakeCluster, code: int) -> None:
    down = status(code, "InternalError" if code == 500 else "TooManyRequests", "failed calling webhook")
    cluster.reject_creates(code, down)
    with pytest.raises(LaunchError) as info:
        run_job(SPEC, apis=cluster.apis(), backend=cluster.backend, options=QUICK)
    message = str(info.value)
    assert "\n" not in message and f"'create' {cluster.backend.group}/{cluster.backend.plural}" in message
    assert f": {code} " in message and "gave up after 5 attempts" in message
    assert ("readyz" in message) if code == 500 else ("throttling" in message)
    assert len(job_calls(cluster, "POST")) == QUICK.create_attempts
    time.sleep(0.1)
    assert cluster.job(NAME) is None and cluster.left_behind() == []


def test_409_then_404_creates_again(cluster: FakeCluster) -> None:
    # the name is taken when we create, but the job is gone (deleted by its TTL) when we look
    conflict = status(409, "AlreadyExists", f'{cluster.backend.plural} "{NAME}" already exists')
    cluster.reject_creates(409, conflict, times=1)

    async def after_the_conflict() -> None:
        await asyncio.sleep(0.5)
        await cluster.operator(NAME, ["Created", "Running", "Succeeded"])

    op = cluster.spawn(after_the_conflict())
    result = run_job(SPEC, apis=cluster.apis(), backend=cluster.backend, options=QUICK)
    op.result(10)
    assert result.state.phase == "Succeeded" and not result.adopted
    assert len(job_calls(cluster, "POST")) == 2


def test_400_is_one_line_without_retry(cluster: FakeCluster) -> None:
    bad = status(422, "Invalid", f'{cluster.backend.kind}.{cluster.backend.group} "{NAME}" is invalid: spec.trainer: '
                                 "Invalid value")
    cluster.setup(lambda kmock: kmock["post", cluster.jobs] << 422 << bad)
    with pytest.raises(LaunchError, match="422") as info:
        run_job(SPEC, apis=cluster.apis(), backend=cluster.backend, options=QUICK)
    assert "\n" not in str(info.value) and "rejected as invalid" in str(info.value)
    assert len(job_calls(cluster, "POST")) == 1


@pytest.mark.parametrize(("served", "expected"), [
    (("pytorchjob", "trainjob"), TrainJobBackend),
    (("trainjob",), TrainJobBackend),
    (("pytorchjob",), PyTorchJobBackend),
])
def test_auto_picks_what_the_cluster_serves(served: tuple[str, ...], expected: type) -> None:
    for cluster in make_cluster(served=served):
        assert isinstance(resolve_backend("auto", cluster.apis()), expected)


def test_auto_with_neither_says_how_to_install_both() -> None:
    for cluster in make_cluster(served=()):
        with pytest.raises(CRDNotInstalledError) as info:
            run_job(SPEC, apis=cluster.apis(), options=QUICK)
        assert "ref=v2.3.0" in str(info.value) and "ref=v1.9.0" in str(info.value)
        assert not [r for r in cluster.launcher_requests() if r.method.value == "POST"]


def test_auto_runs_a_trainjob_end_to_end() -> None:
    for cluster in make_cluster(backend="trainjob", served=("trainjob",)):
        op = cluster.spawn(cluster.operator(NAME, ["Running", "Succeeded"]))
        result = run_job(SPEC, apis=cluster.apis(), options=QUICK)  # spec.backend == "auto"
        op.result(10)
        assert result.state.phase == "Succeeded" and cluster.job(NAME) is None
        assert any("/trainjobs" in r.url.path for r in cluster.launcher_requests() if r.method.value == "POST")
