"""A fake cluster for the launcher's tests: kmock (the Kubernetes API emulator) in a background
thread, plus a fake operator that walks a job's status and creates its pods, playing either the
Training Operator v1 (PyTorchJob) or Trainer v2 (TrainJob and its JobSet's pods): `FakeCluster.backend`.

kmock runs on its own event loop in its own thread so that the launcher, a synchronous client,
runs in the test's main thread (where it can receive SIGTERM).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

import kmock as km
from kubernetes import client

from cdseg.launch import JobBackend, KubeApis, PyTorchJobBackend, RunOptions, TrainJobBackend, get_backend

GROUP, VERSION, PLURAL = "kubeflow.org", "v1", "pytorchjobs"
JOBS = km.resource(f"{GROUP}/{VERSION}/{PLURAL}")
TRAINJOBS = km.resource("trainer.kubeflow.org/v1alpha1/trainjobs")
PODS = km.resource("v1/pods")
CONFIGMAPS = km.resource("v1/configmaps")
LAUNCHER_AGENT = "OpenAPI-Generator"  # the kubernetes client's User-Agent; the fake operator's differs

#: fast polling for tests: short watch windows, frequent pod checks
FAST = RunOptions(watch_window_s=0.3, pod_check_s=0.2, delete_wait_s=5.0, handle_signals=False)


@dataclass
class FakeCluster:
    """kmock + helpers; `call(coro)` runs a coroutine on kmock's loop from the test thread."""

    kmock: Any
    loop: asyncio.AbstractEventLoop
    namespace: str = "cdseg"
    logs: dict[str, bytes] = field(default_factory=dict)
    expire_watches: int = 0   # the next N watch requests get 410 Gone
    backend: JobBackend = field(default_factory=PyTorchJobBackend)

    @property
    def jobs(self) -> Any:
        """kmock's resource of the backend's jobs."""
        b = self.backend
        return km.resource(f"{b.group}/{b.version}/{b.plural}")

    @property
    def trainjob(self) -> bool:
        return isinstance(self.backend, TrainJobBackend)

    # ---- plumbing -------------------------------------------------------------------------------
    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 30) -> Any:
        """Run `coro` on kmock's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Start `coro` on kmock's loop; returns a concurrent future."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def setup(self, fn: Any) -> Any:
        """Run `fn(kmock)` on kmock's loop (reactions must be declared there)."""
        async def run() -> Any:
            return fn(self.kmock)
        return self.call(run())

    @property
    def url(self) -> str:
        return str(self.kmock.url).rstrip("/")

    def apis(self) -> KubeApis:
        """API clients of the launcher, pointing at kmock."""
        return KubeApis.from_api_client(client.ApiClient(client.Configuration(host=self.url)))

    def launcher_requests(self) -> list[km.Request]:
        """Requests the launcher (not the fake operator) made."""
        return [r for r in list(self.kmock) if str(r.headers.get("User-Agent", "")).startswith(LAUNCHER_AGENT)]

    def job(self, name: str) -> dict[str, Any] | None:
        """The stored job, or None when absent or deleted."""
        key = (self.jobs, self.namespace, name)
        if key not in self.kmock.objects or self.kmock.objects[key].deleted:
            return None
        return dict(self.kmock.objects[key].raw)

    def config_map(self, name: str) -> dict[str, Any] | None:
        """The stored ConfigMap `name` (a job's train config), or None when absent or deleted."""
        key = (CONFIGMAPS, self.namespace, name)
        if key not in self.kmock.objects or self.kmock.objects[key].deleted:
            return None
        return dict(self.kmock.objects[key].raw)

    def left_behind(self) -> list[str]:
        """Every job (of either kind) and ConfigMap still stored: what a finished or cancelled launch must not leave."""
        kinds = [km.resource(f"{b.group}/{b.version}/{b.plural}") for b in (PyTorchJobBackend(), TrainJobBackend())]
        return sorted(f"{key[0]}/{key[2]}" for key, obj in list(self.kmock.objects.items())
                      if key[0] in (*kinds, CONFIGMAPS) and not obj.deleted)

    def assign_uids(self) -> None:
        """Answer job creations with the object and a uid, as the API server does (kmock's emulator adds none)."""
        self.setup(lambda kmock: kmock["post", self.jobs] << _with_uid)

    def reject_creates(self, code: int, body: dict[str, Any], times: int | None = None) -> None:
        """Answer the next `times` (None: every) job creation with `code` and `body`, storing nothing, as an
        admission webhook that fails or a throttling API server does. (kmock's emulator stores a POSTed object
        whatever a reaction answers, so the reaction takes it away again.)"""
        seen: list[int] = []

        def forget() -> None:
            for key in [k for k in self.kmock.objects if k[0] == self.jobs]:
                del self.kmock.objects[key]

        def applies(req: km.Request) -> bool:
            if req.id in seen:
                return True
            if times is None or len(seen) < times:
                seen.append(req.id)
                return True
            return False

        async def answer() -> dict[str, Any]:
            await asyncio.sleep(0.02)  # the emulator stores the object meanwhile: take it away before answering
            forget()
            return body

        self.setup(lambda kmock: kmock["post", self.jobs][applies] << code << (lambda: answer()))

    # ---- the fake operator ------------------------------------------------------------------------
    async def wait_for_job(self, name: str, timeout: float = 10) -> dict[str, Any]:
        """Wait until the launcher has created job `name`."""
        for _ in range(int(timeout / 0.01)):
            obj = self.job(name)
            if obj is not None:
                return obj
            await asyncio.sleep(0.01)
        raise AssertionError(f"job {name} was never created")

    async def set_conditions(self, name: str, conditions: list[dict[str, str]], **extra: Any) -> None:
        """PATCH the job's /status with `conditions` (the whole list, as the operator keeps it) and `extra`."""
        b = self.backend
        path = f"/apis/{b.group}/{b.version}/namespaces/{self.namespace}/{b.plural}/{name}/status"
        async with self.kmock.patch(path, json={"status": {"conditions": conditions, **extra}},
                                    headers={"Content-Type": "application/merge-patch+json"}) as resp:
            resp.raise_for_status()

    def pod_name(self, job: str, replica: str = "master", index: int = 0) -> str:
        """What the operator names a pod: `<job>-master-0` (v1) or `<job>-node-0-<index>-x` (JobSet)."""
        if self.trainjob:
            return f"{job}-node-0-{0 if replica == 'master' else index + 1}-x"
        return f"{job}-{replica}-{index}"

    async def create_pod(self, job: str, replica: str = "master", index: int = 0, *, running: bool = True,
                         waiting: str | None = None, image: str = "img",
                         unschedulable: str | None = None) -> str:
        """Create one of the job's pods, with the operator's labels and a container status."""
        name = self.pod_name(job, replica, index)
        if waiting:
            state: dict[str, Any] = {"waiting": {"reason": waiting, "message": f"{waiting} for {image}"}}
        elif running:
            state = {"running": {"startedAt": "2026-11-24T00:00:00Z"}}
        else:
            state = {"waiting": {"reason": "ContainerCreating"}}
        if self.trainjob:
            labels = {"jobset.sigs.k8s.io/jobset-name": job, "jobset.sigs.k8s.io/replicatedjob-name": "node",
                      "jobset.sigs.k8s.io/job-index": "0",
                      "batch.kubernetes.io/job-completion-index": str(0 if replica == "master" else index + 1)}
        else:
            labels = {"training.kubeflow.org/job-name": job, "training.kubeflow.org/replica-type": replica,
                      "training.kubeflow.org/replica-index": str(index)}
        container = self.backend.container
        status: dict[str, Any] = {"phase": "Running" if running and not waiting else "Pending"}
        if unschedulable:
            status["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                     "message": unschedulable}]
        else:
            status["containerStatuses"] = [{"name": container, "image": image, "imageID": "", "ready": running,
                                            "restartCount": 0, "state": state}]
        pod = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": self.namespace, "uid": f"uid-{name}", "labels": labels},
            "spec": {"containers": [{"name": container, "image": image}]},
            "status": status,
        }
        async with self.kmock.post(f"/api/v1/namespaces/{self.namespace}/pods", json=pod) as resp:
            resp.raise_for_status()
        return name

    async def operator(self, name: str, phases: list[str], *, log: bytes = b"", delay: float = 0.15,
                       reason: str = "", message: str = "", workers: int = 0) -> None:
        """Play the operator: walk `phases` (e.g. Created, Running, Succeeded), creating pods on Running.

        PyTorchJob: conditions accumulate as the real operator keeps them: Running and Restarting replace
        each other, and on Succeeded/Failed the Running condition stays with status False.
        TrainJob: see `trainer`.
        """
        if self.trainjob:
            await self.trainer(name, phases, log=log, delay=delay, reason=reason, message=message, workers=workers)
            return
        await self.wait_for_job(name)
        conditions: list[dict[str, str]] = []
        pods_made = False
        for i, phase in enumerate(phases):
            if phase in ("Running", "Restarting") and not pods_made:
                self.logs[self.pod_name(name)] = log
                await self.create_pod(name)
                for w in range(workers):
                    await self.create_pod(name, "worker", w)
                pods_made = True
            if phase in ("Running", "Restarting", "Succeeded", "Failed"):
                for c in conditions:
                    if c["type"] in ("Running", "Restarting"):
                        c["status"] = "False"
            stamp = f"2026-11-24T00:00:{i:02d}Z"
            cond = {"type": phase, "status": "True", "reason": reason or f"PyTorchJob{phase}",
                    "message": message or f"PyTorchJob {name} is {phase.lower()}.", "lastTransitionTime": stamp,
                    "lastUpdateTime": stamp}
            conditions = [c for c in conditions if c["type"] != phase] + [cond]
            if self.job(name) is None:
                return  # deleted by the launcher
            await self.set_conditions(name, [dict(c) for c in conditions])
            await asyncio.sleep(delay)


    async def trainer(self, name: str, phases: list[str], *, log: bytes, delay: float, reason: str, message: str,
                      workers: int) -> None:
        """Play Trainer v2: Running and Restarting show as active pods in `jobsStatus` (no condition), Succeeded
        as condition Complete, Failed as Failed, Suspended as Suspended (what Kueue does to a queued job)."""
        await self.wait_for_job(name)
        pods_made = False
        for i, phase in enumerate(phases):
            if phase in ("Running", "Restarting") and not pods_made:
                self.logs[self.pod_name(name)] = log
                await self.create_pod(name)
                for w in range(workers):
                    await self.create_pod(name, "worker", w)
                pods_made = True
            stamp = f"2026-11-24T00:00:{i:02d}Z"
            cond_type = {"Succeeded": "Complete", "Failed": "Failed", "Suspended": "Suspended"}.get(phase)
            conditions = []
            if cond_type:
                conditions = [{"type": cond_type, "status": "True", "reason": reason or f"TrainJob{phase}",
                               "message": message or f"TrainJob {name} is {phase.lower()}.",
                               "lastTransitionTime": stamp}]
            active = 1 + workers if phase in ("Running", "Restarting") else 0
            jobs_status = [{"name": "node", "active": active, "ready": active, "succeeded": 0, "failed": 0,
                            "suspended": 0}]
            if self.job(name) is None:
                return  # deleted by the launcher
            await self.set_conditions(name, conditions, jobsStatus=jobs_status)
            await asyncio.sleep(delay)


def _start(namespace: str) -> tuple[FakeCluster, threading.Thread, asyncio.AbstractEventLoop, Any]:
    # aiohttp's access log from kmock's thread would outlive pytest's log capture
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    loop = asyncio.new_event_loop()
    ready: dict[str, Any] = {}
    started = threading.Event()
    stop: asyncio.Event | None = None

    async def main() -> None:
        nonlocal stop
        stop = asyncio.Event()
        async with km.KubernetesEmulator() as kmock, km.Server(kmock):
            ready["kmock"] = kmock
            started.set()
            await stop.wait()
            # fake-operator coroutines still waiting on a job the launcher deleted
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True, name="kmock")
    thread.start()
    if not started.wait(10):
        raise RuntimeError("kmock did not start")
    cluster = FakeCluster(ready["kmock"], loop, namespace)

    def stopper() -> None:
        assert stop is not None
        loop.call_soon_threadsafe(stop.set)

    return cluster, thread, loop, stopper


GONE = {"type": "ERROR", "object": {"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": 410,
                                    "reason": "Expired", "message": "too old resource version: 1 (2)"}}


def _with_uid(req: km.Request) -> dict[str, Any]:
    body = req.data if isinstance(req.data, dict) else {}
    meta = body.get("metadata") or {}
    return {**body, "metadata": {**meta, "uid": f"uid-{meta.get('name')}"}}


def install(cluster: FakeCluster, served: tuple[str, ...] = ("pytorchjob", "trainjob")) -> None:
    """Declare the resources, serve pod logs, and route watches.

    kmock recognises a watch by `?watch=true`; the kubernetes client sends `watch=True` (which the
    real API server accepts), so those requests are routed to kmock's own watch handler here, or
    answered with a 410 Gone ERROR event while `cluster.expire_watches` is positive.
    """
    def watch(req: km.Request) -> Any:
        if cluster.expire_watches > 0:
            cluster.expire_watches -= 1
            return (GONE,)
        return cluster.kmock._serve_watch(req)

    def declare(kmock: Any) -> None:
        for name in served:
            b = get_backend(name)
            kmock.resources[f"{b.group}/{b.version}/{b.plural}"] = {}
        kmock.resources["v1/pods"] = {}
        kmock.resources["v1/configmaps"] = {}
        kmock["get", PODS, km.subresource("log")] << (lambda req: cluster.logs.get(req.name or "", b""))
        kmock["get", km.params(watch="True")] << watch
    cluster.setup(declare)


def make_cluster(namespace: str = "cdseg", backend: str = "pytorchjob",
                 served: tuple[str, ...] = ("pytorchjob", "trainjob")) -> Iterator[FakeCluster]:
    """Start kmock in a thread serving `served` kinds; yields the FakeCluster playing `backend`; stops it afterwards."""
    cluster, thread, loop, stop = _start(namespace)
    cluster.backend = get_backend(backend)
    install(cluster, served)
    try:
        yield cluster
    finally:
        stop()
        thread.join(10)
        loop.close()
