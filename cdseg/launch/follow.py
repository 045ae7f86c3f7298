"""Follow a created job to its end: watch its status, check its pods, stream the leader's (rank 0's) log.

`Follower` is the base of the runner (`cdseg.launch.runner`), which adds creating, adopting and
deleting. API errors are translated into `LaunchError`s, except transient ones (5xx, 429, network),
which `_wait` waits out for `RunOptions.outage_grace_s`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import urllib3

from cdseg.launch.backend import JobBackend, JobState, resource
from cdseg.launch.errors import (
    ImagePullError,
    JobCancelledError,
    JobFailedError,
    JobPendingError,
    JobTimeoutError,
    JobVanishedError,
    KubeConfigError,
    LaunchError,
    PodConfigError,
)
from cdseg.launch.kube import KubeApis, kubernetes, translate
from cdseg.launch.logs import LogFollower, find_pods, read_tail
from cdseg.launch.spec import JobSpec

log = logging.getLogger("cdseg.launch.runner")

#: waiting reasons that will not resolve by themselves
_PULL_FATAL = {"ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
_CONFIG_FATAL = {"CreateContainerConfigError", "CreateContainerError"}
#: connection refused, DNS, TLS, read timeouts (urllib3's errors are not OSErrors)
NETWORK_ERRORS: tuple[type[BaseException], ...] = (OSError, urllib3.exceptions.HTTPError)
_RECONNECT_ERRORS: tuple[type[BaseException], ...] = (*NETWORK_ERRORS, ValueError)  # + a truncated JSON line
#: API answers worth waiting out while a job runs (an API server restart, etcd hiccup, throttling)
_TRANSIENT_STATUS = {429, 500, 502, 503, 504}


def is_transient(exc: BaseException) -> bool:
    """A 5xx, 429 or network error: worth retrying."""
    return isinstance(exc, NETWORK_ERRORS) or getattr(exc, "status", None) in _TRANSIENT_STATUS


@dataclass
class RunOptions:
    """How `run_job` follows a job (defaults suit a cluster; tests shrink the intervals)."""

    timeout_s: float | None = None       # client-side limit; None: wait for the job's own deadline
    delete_on_success: bool = False      # else the job's ttlSecondsAfterFinished removes it
    keep_failed: bool = False            # keep a failed job (and its pods) for debugging
    watch_window_s: float = 30.0         # each watch request lasts at most this long, then reconnects
    pod_check_s: float = 15.0            # how often pods are checked for image-pull / config errors
    log_tail_lines: int = 50
    stream_logs: bool = True
    delete_wait_s: float = 60.0          # how long to wait for a failed job being replaced to go away
    outage_grace_s: float = 600.0        # how long the API server may be unreachable (5xx, 429, network) mid-job
    handle_signals: bool = True          # SIGTERM and SIGINT cancel (only from the main thread)
    pending_timeout_s: float | None = 1800.0  # fail (and delete) a job whose pods have not started by then
    create_attempts: int = 5             # create tries on 5xx, 429 and network errors
    retry_backoff_s: float = 1.0         # first wait between create tries (doubles, at most 30 s)


class Follower:
    """Watches job `spec.name` until it finishes; the runner's base class."""

    def __init__(self, spec: JobSpec, apis: KubeApis, backend: JobBackend, opts: RunOptions,
                 sink: Callable[[str], None], cancel: threading.Event) -> None:
        self.spec, self.apis, self.backend, self.opts, self.sink, self.cancel = spec, apis, backend, opts, sink, cancel
        self.name, self.ns = spec.name, spec.namespace
        self.resource = resource(backend)
        self.follower: LogFollower | None = None
        self._pull_seen: dict[str, int] = {}
        self._reported: set[str] = set()
        self._started = False                 # a pod of the job ran (or the job finished)
        self._pending_reason = "its pods were not created (is the operator running?)"
        self._pending_since = time.monotonic()

    def _call(self, verb: str, fn: Callable[..., Any], *args: Any, name: str = "", resource: str | None = None,
              **kwargs: Any) -> Any:
        """`fn(...)` with API errors translated; transient ones (5xx, 429, network) pass through for `_wait`."""
        k = kubernetes()
        try:
            return fn(*args, **kwargs)
        except BaseException as exc:
            if is_transient(exc):
                raise
            if not isinstance(exc, k.client.ApiException):
                raise
            raise translate(exc, verb=verb, resource=resource or self.resource, namespace=self.ns, name=name) from exc

    def _unreachable(self, exc: BaseException) -> KubeConfigError:
        return KubeConfigError(f"cannot reach the Kubernetes API server at {self.apis.host} ({exc}); check "
                               "--kubeconfig/--context, or the network")

    def _co(self) -> tuple[str, str, str, str]:
        return self.backend.group, self.backend.version, self.ns, self.backend.plural

    def _get(self) -> dict[str, Any] | None:
        k = kubernetes()
        try:
            obj: dict[str, Any] = self.apis.custom.get_namespaced_custom_object(*self._co(), self.name)
            return obj
        except k.client.ApiException as exc:
            if exc.status == 404:
                return None
            if is_transient(exc):
                raise
            raise translate(exc, verb="get", resource=self.resource, namespace=self.ns, name=self.name) from exc

    def _wait(self, start: float) -> JobState:
        deadline = None if self.opts.timeout_s is None else start + self.opts.timeout_s
        self._pending_since = start
        k = kubernetes()
        resource_version: str | None = None
        next_pod_check = 0.0
        outage_since: float | None = None
        while True:
            try:
                resource_version, next_pod_check, done = self._round(k, deadline, resource_version, next_pod_check)
                outage_since = None
            except Exception as exc:
                if not is_transient(exc):
                    raise
                now = time.monotonic()
                outage_since = now if outage_since is None else outage_since
                if now - outage_since > self.opts.outage_grace_s:
                    raise LaunchError(f"the Kubernetes API server at {self.apis.host} kept failing for "
                                      f"{now - outage_since:.0f}s while following job {self.ns}/{self.name} "
                                      f"({exc}); deleted it") from exc
                log.warning("Kubernetes API unavailable (%s); retrying", str(exc).splitlines()[0][:200])
                self._sleep(min(5.0, self.opts.watch_window_s))
                resource_version, done = None, None
            if done is not None:
                return done

    def _round(self, k: Any, deadline: float | None, resource_version: str | None,
               next_pod_check: float) -> tuple[str | None, float, JobState | None]:
        """One watch window: (re)list if needed, check pods, watch; returns where to go on, or the final state."""
        if resource_version is None:  # (re)list: the current state, and where to watch from
            obj = self._get()
            if obj is None:
                raise JobVanishedError(f"job {self.ns}/{self.name} was deleted while the launcher was waiting for it")
            state = self._observe(obj)
            if state.finished:
                return None, next_pod_check, self._finish(state)
            resource_version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
        now = time.monotonic()
        self._check_cancel()
        if deadline is not None and now >= deadline:
            raise JobTimeoutError(f"job {self.ns}/{self.name} did not finish within {self.opts.timeout_s:.0f}s; "
                                  "deleted it (raise --timeout, or check the pods for a hang)")
        if now >= next_pod_check:
            self._check_pods()
            next_pod_check = now + self.opts.pod_check_s
        self._check_pending(now)
        window = self.opts.watch_window_s if deadline is None else max(0.05, min(self.opts.watch_window_s, deadline - now))
        window = min(window, max(0.05, next_pod_check - now))
        kwargs: dict[str, Any] = {
            "field_selector": f"metadata.name={self.name}",
            "timeout_seconds": max(1, int(window)),
            "_request_timeout": (10, window + 1.0),
            "allow_watch_bookmarks": True,
        }
        if resource_version:
            kwargs["resource_version"] = resource_version
        watcher = k.watch.Watch()
        try:
            for event in watcher.stream(self.apis.custom.list_namespaced_custom_object, *self._co(), **kwargs):
                obj = event.get("raw_object") or {}
                meta = obj.get("metadata") or {}
                if event.get("type") == "BOOKMARK":
                    resource_version = meta.get("resourceVersion") or resource_version
                    continue
                if meta.get("name") != self.name:
                    continue  # not every server honours the field selector
                if event.get("type") == "DELETED":
                    raise JobVanishedError(f"job {self.ns}/{self.name} was deleted by someone else while running")
                resource_version = meta.get("resourceVersion") or resource_version
                state = self._observe(obj)
                if state.finished:
                    watcher.stop()
                    return resource_version, next_pod_check, self._finish(state)
                self._check_cancel()
                if time.monotonic() >= next_pod_check or (deadline is not None and time.monotonic() >= deadline):
                    break
        except k.client.ApiException as exc:
            if exc.status == 410:  # the resource version expired: list again and go on
                log.debug("watch expired (410 Gone); re-listing %s", self.name)
                return None, next_pod_check, None
            if is_transient(exc):
                raise
            raise translate(exc, verb="watch", resource=self.resource, namespace=self.ns) from exc
        except _RECONNECT_ERRORS as exc:
            # read timeouts and dropped connections: re-list (which waits out an outage), then watch again
            log.debug("watch connection ended (%s); reconnecting", exc)
            resource_version = None
        finally:
            watcher.stop()
        return resource_version, next_pod_check, None

    def _observe(self, obj: dict[str, Any]) -> JobState:
        state = self.backend.state(obj)
        if state.phase in ("Running", "Restarting", "Succeeded", "Failed"):
            self._started = True
            self._start_logs()
        if state.phase == "Suspended":
            self._report("suspended", f"job {self.ns}/{self.name} is suspended ({state.reason or 'no reason'}: "
                         f"{state.message or 'no message'}): it is queued until admitted (Kueue: check "
                         "`kubectl get workloads -n " + self.ns + "` and the ClusterQueue's quota), or resume it")
        if state.phase == "Restarting":
            log.warning("job %s/%s is restarting: %s", self.ns, self.name, state.message or state.reason)
        return state

    def _finish(self, state: JobState) -> JobState:
        if state.phase == "Succeeded":
            log.info("job %s/%s succeeded", self.ns, self.name)
            return state
        self._stop_logs()
        tail = self._tail()
        shown = "\n".join(tail) if tail else "(no log: the leader pod is gone or never started)"
        raise JobFailedError(
            f"job {self.ns}/{self.name} failed: {state.reason or 'Failed'}: {state.message or 'no message'}\n"
            f"--- last {len(tail)} lines of the leader's (rank 0's) log ---\n{shown}",
            name=self.name, reason=state.reason, log_tail=tail)

    def _check_cancel(self) -> None:
        if self.cancel.is_set():
            raise JobCancelledError(f"cancelled; deleting job {self.ns}/{self.name}")

    def _sleep(self, seconds: float) -> None:
        if self.cancel.wait(seconds):
            self._check_cancel()

    # ---- pods: fatal waiting reasons, and why they are pending ------------------------------------
    def _report(self, key: str, message: str) -> None:
        """Log `message` once per `key`; it is also the reason given if the pending timeout strikes."""
        self._pending_reason = message
        if key not in self._reported:
            self._reported.add(key)
            log.warning("%s", message)

    def _check_pending(self, now: float) -> None:
        limit = self.opts.pending_timeout_s
        if self._started or limit is None or now - self._pending_since < limit:
            return
        raise JobPendingError(f"job {self.ns}/{self.name} did not start within {limit:.0f}s (--pending-timeout): "
                              f"{self._pending_reason}; deleted it")

    def _check_pods(self) -> None:
        pods = self._call("list", find_pods, self.apis, self.ns, self.backend.pod_selector(self.name), resource="pods")
        for pod in pods:
            status = pod.status
            if status is not None and status.phase in ("Running", "Succeeded", "Failed"):
                self._started = True
            for cond in (status.conditions or []) if status else []:
                if cond.type == "PodScheduled" and cond.status == "False" and cond.reason == "Unschedulable":
                    self._report(f"unschedulable {pod.metadata.name}", (
                        f"pod {pod.metadata.name} cannot be scheduled: {cond.message or cond.reason}; free or add "
                        "nodes with the requested resources, lower --gpus/--cpu/--memory, or fix --node-selector/"
                        "--tolerations"))
            statuses = list((status.init_container_statuses or []) if status else []) + list(
                (status.container_statuses or []) if status else [])
            for st in statuses:
                waiting = st.state.waiting if st.state else None
                if waiting is None:
                    continue
                where = f"pod {pod.metadata.name} container {st.name}"
                reason, message = waiting.reason or "", waiting.message or ""
                if reason in _PULL_FATAL or (reason == "ErrImagePull" and self._seen_twice(where)):
                    raise ImagePullError(f"{where} cannot pull image {st.image!r}: {reason}: {message}; check the image "
                                         "name and tag, that it was pushed (or `kind load docker-image`-ed), and "
                                         "imagePullSecrets for a private registry")
                if reason in _CONFIG_FATAL:
                    raise PodConfigError(f"{where} cannot start: {reason}: {message}; create the Secret/ConfigMap it "
                                         "names (see k8s/base) or fix the job's volumes and env")
                if reason == "CrashLoopBackOff":
                    self._report(f"crashloop {where}", f"{where} keeps crashing ({message or reason}); its log above "
                                 "says why; the job fails when its restarts run out")

    def _seen_twice(self, where: str) -> bool:
        self._pull_seen[where] = self._pull_seen.get(where, 0) + 1
        return self._pull_seen[where] >= 2

    # ---- logs -----------------------------------------------------------------------------------
    def _start_logs(self) -> None:
        if self.follower is None and self.opts.stream_logs:
            self.follower = LogFollower(self.apis, self.ns, self.backend.leader_pod_selector(self.spec), self.backend.container,
                                        self.sink, tail_lines=self.opts.log_tail_lines,
                                        retry_s=min(2.0, self.opts.watch_window_s))
            self.follower.start()

    def _stop_logs(self) -> None:
        if self.follower is not None:
            self.follower.stop()

    def _tail(self) -> list[str]:
        if self.follower is not None and self.follower.tail:
            return list(self.follower.tail)
        return read_tail(self.apis, self.ns, self.backend.leader_pod_selector(self.spec), self.backend.container,
                         self.opts.log_tail_lines)
