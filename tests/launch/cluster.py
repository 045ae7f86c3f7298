"""A fake cluster for the launcher's tests: kmock (the Kubernetes API emulator) in a background
thread, plus a fake Training Operator that walks a job's status conditions and creates its pods.

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

from cdseg.launch import KubeApis, RunOptions

GROUP, VERSION, PLURAL = "kubeflow.org", "v1", "pytorchjobs"
JOBS = km.resource(f"{GROUP}/{VERSION}/{PLURAL}")
PODS = km.resource("v1/pods")
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
        key = (JOBS, self.namespace, name)
        if key not in self.kmock.objects or self.kmock.objects[key].deleted:
            return None
        return dict(self.kmock.objects[key].raw)

    # ---- the fake operator ------------------------------------------------------------------------
    async def wait_for_job(self, name: str, timeout: float = 10) -> dict[str, Any]:
        """Wait until the launcher has created job `name`."""
        for _ in range(int(timeout / 0.01)):
            obj = self.job(name)
            if obj is not None:
                return obj
            await asyncio.sleep(0.01)
        raise AssertionError(f"job {name} was never created")

    async def set_conditions(self, name: str, conditions: list[dict[str, str]]) -> None:
        """PATCH the job's /status with `conditions` (the whole list, as the operator keeps it)."""
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{self.namespace}/{PLURAL}/{name}/status"
        async with self.kmock.patch(path, json={"status": {"conditions": conditions}},
                                    headers={"Content-Type": "application/merge-patch+json"}) as resp:
            resp.raise_for_status()

    async def create_pod(self, job: str, replica: str = "master", index: int = 0, *, running: bool = True,
                         waiting: str | None = None, image: str = "img") -> str:
        """Create one of the job's pods, with the operator's labels and a container status."""
        name = f"{job}-{replica}-{index}"
        if waiting:
            state: dict[str, Any] = {"waiting": {"reason": waiting, "message": f"{waiting} for {image}"}}
        elif running:
            state = {"running": {"startedAt": "2026-11-24T00:00:00Z"}}
        else:
            state = {"waiting": {"reason": "ContainerCreating"}}
        pod = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": self.namespace, "uid": f"uid-{name}",
                         "labels": {"training.kubeflow.org/job-name": job,
                                    "training.kubeflow.org/replica-type": replica,
                                    "training.kubeflow.org/replica-index": str(index)}},
            "spec": {"containers": [{"name": "pytorch", "image": image}]},
            "status": {"phase": "Running" if running and not waiting else "Pending",
                       "containerStatuses": [{"name": "pytorch", "image": image, "imageID": "", "ready": running,
                                              "restartCount": 0, "state": state}]},
        }
        async with self.kmock.post(f"/api/v1/namespaces/{self.namespace}/pods", json=pod) as resp:
            resp.raise_for_status()
        return name

    async def operator(self, name: str, phases: list[str], *, log: bytes = b"", delay: float = 0.15,
                       reason: str = "", message: str = "", workers: int = 0) -> None:
        """Play the Training Operator: walk `phases` (e.g. Created, Running, Succeeded), creating pods on Running.

        Conditions accumulate as the real operator keeps them: Running and Restarting replace each other,
        and on Succeeded/Failed the Running condition stays with status False.
        """
        await self.wait_for_job(name)
        conditions: list[dict[str, str]] = []
        pods_made = False
        for i, phase in enumerate(phases):
            if phase in ("Running", "Restarting") and not pods_made:
                self.logs[f"{name}-master-0"] = log
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


def install(cluster: FakeCluster) -> None:
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
        kmock.resources[f"{GROUP}/{VERSION}/{PLURAL}"] = {}
        kmock.resources["v1/pods"] = {}
        kmock["get", PODS, km.subresource("log")] << (lambda req: cluster.logs.get(req.name or "", b""))
        kmock["get", km.params(watch="True")] << watch
    cluster.setup(declare)


def make_cluster(namespace: str = "cdseg") -> Iterator[FakeCluster]:
    """Start kmock in a thread; yields the FakeCluster; stops it afterwards."""
    cluster, thread, loop, stop = _start(namespace)
    install(cluster)
    try:
        yield cluster
    finally:
        stop()
        thread.join(10)
        loop.close()
