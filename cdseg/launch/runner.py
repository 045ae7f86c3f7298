"""Run one step's job to completion: create (or adopt), follow, stream the log, clean up.

Policy: a job that this call created or adopted is deleted on failure, timeout and cancellation
(unless `keep_failed`), and on success only when `delete_on_success` (otherwise its
`ttlSecondsAfterFinished` removes it). No error path leaves a job behind. The job's ConfigMap (the
pods' train config, `cdseg.launch.trainconfig`) is created before it, owned by it once it exists, and
deleted with it.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from cdseg.errors import ConfigError
from cdseg.launch.backend import JobBackend, JobState, all_backends, delete_command, get_backend, resource
from cdseg.launch.errors import CRDNotInstalledError, JobCancelledError, JobConflictError, LaunchError
from cdseg.launch.follow import NETWORK_ERRORS, Follower, RunOptions, is_transient
from cdseg.launch.kube import KubeApis, connect, kubernetes, served, status_body, translate
from cdseg.launch.spec import (
    ANNOTATION_PIPELINE_RUN,
    ANNOTATION_RUN,
    ANNOTATION_SPEC_HASH,
    COMMON_LABELS,
    LABEL_PIPELINE_RUN,
    LABEL_RUN,
    LABEL_STEP,
    JobSpec,
    label_value,
)
from cdseg.launch.trainconfig import config_map, owner_reference

log = logging.getLogger(__name__)


@dataclass
class JobResult:
    """A finished job: its name, final state, whether it was adopted, and the master's last log lines."""

    name: str
    namespace: str
    state: JobState
    adopted: bool = False
    duration_s: float = 0.0
    log_tail: list[str] = field(default_factory=list)
    deleted: bool = False


def run_job(spec: JobSpec, *, apis: KubeApis | None = None, kubeconfig: str | None = None,
            context: str | None = None, in_cluster: bool | None = None, options: RunOptions | None = None,
            backend: JobBackend | None = None, log_sink: Callable[[str], None] | None = None,
            cancel: threading.Event | None = None) -> JobResult:
    """Create (or adopt) the job of `spec`, follow it to the end, and return or raise.

    The kind of job is `backend`, else `spec.backend` (`auto`: whichever the cluster serves, TrainJob
    first). Returns on success. Raises `JobFailedError` (reason + log tail), `JobTimeoutError`,
    `JobPendingError`, `JobCancelledError` (SIGTERM / SIGINT / `cancel` set), a `ClusterSetupError`
    (missing CRD, namespace, permission, image) or a `LaunchError` (API errors after retries). The
    job is deleted on every error path (see the module doc).
    """
    if apis is None:
        apis = connect(kubeconfig, context, in_cluster)
    if backend is None:
        backend = resolve_backend(spec.backend, apis)
    runner = _Runner(spec, apis, backend, options or RunOptions(),
                     log_sink or (lambda line: log.info("[%s] %s", spec.name, line)), cancel or threading.Event())
    return runner.run()


def resolve_backend(name: str, apis: KubeApis) -> JobBackend:
    """The backend called `name`; for `auto`, the first of `BACKEND_NAMES` whose resource the cluster serves."""
    if name != "auto":
        return get_backend(name)
    candidates = all_backends()
    for candidate in candidates:
        if served(apis, candidate):
            log.info("backend auto: the cluster serves %s; launching a %s", resource(candidate), candidate.kind)
            return candidate
    hints = "; or ".join(c.install_hint for c in candidates)
    raise CRDNotInstalledError(f"the API server at {apis.host} serves none of "
                               f"{', '.join(resource(c) for c in candidates)}: {hints}")


class _Runner(Follower):
    """Creates or adopts the job, follows it (`Follower`), and deletes it per the policy above."""

    def __init__(self, spec: JobSpec, apis: KubeApis, backend: JobBackend, opts: RunOptions,
                 sink: Callable[[str], None], cancel: threading.Event) -> None:
        super().__init__(spec, apis, backend, opts, sink, cancel)
        self._create_sent = False
        self._config_made = False  # the ConfigMap exists (this attempt created or replaced it)
        self._created: dict[str, Any] | None = None  # the job as the create call returned it
        # a kind without a TTL would stay forever: delete it once it has succeeded (its log tail is kept)
        self._delete_on_success = opts.delete_on_success or not backend.expires

    # ---- the whole life cycle -------------------------------------------------------------------
    def run(self) -> JobResult:
        start = time.monotonic()
        owned = False
        succeeded = False
        with self._signals():
            try:
                adopted = self._create_or_adopt()
                owned = True
                state = self._wait(start)
                succeeded = True
                return JobResult(self.name, self.ns, state, adopted, time.monotonic() - start, self._tail(),
                                 deleted=self._delete_on_success)
            finally:
                self._stop_logs()
                if owned and (self._delete_on_success if succeeded else not self.opts.keep_failed):
                    self._delete()
                elif not owned and self._create_sent:
                    self._delete_if_ours()  # interrupted while the create request was in flight
                elif not owned and self._config_made:
                    self._delete_config()  # the job was never created: nothing partial stays

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        if not self.opts.handle_signals or threading.current_thread() is not threading.main_thread():
            yield
            return

        def on_term(signum: int, frame: Any) -> None:
            if self.cancel.is_set():
                return  # already cancelling: let the clean-up finish
            self.cancel.set()
            raise JobCancelledError(f"cancelled by signal {signal.Signals(signum).name}; deleting job {self.ns}/{self.name}")

        previous = {sig: signal.signal(sig, on_term) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    # ---- create or adopt ------------------------------------------------------------------------
    def _create_or_adopt(self) -> bool:
        body = self.backend.build(self.spec)
        for _ in range(3):
            self._put_config()
            if not self._create(body):
                self._own_config(self._created)
                return False
            existing = self._get()
            if existing is None:
                continue  # deleted in between: create again
            self._check_identity(existing)
            state = self.backend.state(existing)
            if state.phase == "Failed" or (existing.get("metadata") or {}).get("deletionTimestamp"):
                log.info("job %s/%s exists from an earlier attempt and %s; replacing it", self.ns, self.name,
                         "failed" if state.phase == "Failed" else "is being deleted")
                self._delete()
                self._wait_gone()
                continue
            log.info("adopting job %s/%s from an earlier attempt (state %s)", self.ns, self.name, state.phase)
            theirs = ((existing.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_SPEC_HASH)
            ours = body["metadata"]["annotations"].get(ANNOTATION_SPEC_HASH)
            if theirs != ours:
                log.warning("the adopted job %s/%s was created with other settings than this attempt's (spec hash %s, "
                            "now %s); delete it to run with the new ones", self.ns, self.name, theirs, ours)
            self._own_config(existing)
            return True
        raise LaunchError(f"could not create or adopt job {self.ns}/{self.name}: it keeps reappearing; retry later")

    def _create(self, body: dict[str, Any]) -> bool:
        """POST the job, retrying 5xx, 429 and network errors with backoff; False when created, True on 409."""
        k = kubernetes()
        delay = self.opts.retry_backoff_s
        for attempt in range(1, self.opts.create_attempts + 1):
            try:
                self._create_sent = True
                self._created = self.apis.custom.create_namespaced_custom_object(*self._co(), body)
                self._create_sent = False
                log.info("created %s %s/%s (%d pods x %d processes)", self.backend.kind, self.ns, self.name,
                         self.spec.replicas, self.spec.nproc_per_node)
                return False
            except k.client.ApiException as exc:
                if exc.status == 409:
                    self._create_sent = False
                    return True
                if not is_transient(exc) or attempt == self.opts.create_attempts:
                    self._create_sent = exc.status in (500, 502, 503, 504)  # it may exist regardless
                    err = translate(exc, verb="create", resource=self.resource, namespace=self.ns, backend=self.backend)
                    if attempt > 1 and type(err) is LaunchError:
                        err = LaunchError(f"{err} (gave up after {attempt} attempts)")
                    raise err from exc
                log.warning("create %s %s/%s: %s %s; retrying in %.1fs (attempt %d of %d)", self.backend.kind,
                            self.ns, self.name, exc.status, exc.reason, delay, attempt, self.opts.create_attempts)
            except NETWORK_ERRORS as exc:
                if attempt == self.opts.create_attempts:
                    raise self._unreachable(exc) from exc
                log.warning("create %s %s/%s: %s; retrying in %.1fs", self.backend.kind, self.ns, self.name,
                            str(exc).splitlines()[0][:200], delay)
            self._sleep(delay)
            delay = min(delay * 2, 30.0)
        raise AssertionError("unreachable")  # the last attempt returns or raises

    # ---- the train config's ConfigMap ------------------------------------------------------------------
    def _put_config(self) -> None:
        """Create the ConfigMap of the pods' train config (patch it if an earlier attempt left one), retrying
        5xx, 429 and network errors like the job's create."""
        k = kubernetes()
        body = config_map(self.spec)
        delay = self.opts.retry_backoff_s
        for attempt in range(1, self.opts.create_attempts + 1):
            try:
                try:
                    self.apis.core.create_namespaced_config_map(self.ns, body)
                except k.client.ApiException as exc:
                    if exc.status != 409:
                        raise
                    # an earlier attempt's: this attempt's config replaces its file (a merge patch: no read needed)
                    self.apis.core.patch_namespaced_config_map(self.name, self.ns, {
                        "metadata": {k: body["metadata"][k] for k in ("labels", "annotations")}, "data": body["data"]})
                self._config_made = True
                return
            except k.client.ApiException as exc:
                if is_transient(exc):
                    self._config_made = True  # a 5xx may come after the object was stored: delete it to be sure
                if not is_transient(exc) or attempt == self.opts.create_attempts:
                    raise translate(exc, verb="create", resource="configmaps", namespace=self.ns, name=self.name) from exc
                log.warning("create ConfigMap %s/%s: %s %s; retrying in %.1fs", self.ns, self.name, exc.status,
                            exc.reason, delay)
            except NETWORK_ERRORS as exc:
                self._config_made = True  # the request may have arrived
                if attempt == self.opts.create_attempts:
                    raise self._unreachable(exc) from exc
            self._sleep(delay)
            delay = min(delay * 2, 30.0)

    def _own_config(self, job: dict[str, Any] | None) -> None:
        """Make the job the ConfigMap's owner, so that the garbage collector deletes it with the job whoever deletes
        the job (a TTL, kubectl). Not fatal: the launcher and the run's clean-up delete it too."""
        if not job or not (job.get("metadata") or {}).get("uid"):
            return
        patch = {"metadata": {"ownerReferences": [owner_reference(self.backend, job)]}}
        try:
            self.apis.core.patch_namespaced_config_map(self.name, self.ns, patch)
        except Exception as exc:
            log.warning("could not make job %s/%s the owner of its ConfigMap (%s); it is deleted with the job by "
                        "the launcher, or by hand: kubectl delete configmap -n %s %s", self.ns, self.name,
                        str(exc).splitlines()[0][:200], self.ns, self.name)

    def _delete_config(self) -> None:
        k = kubernetes()
        try:
            self.apis.core.delete_namespaced_config_map(self.name, self.ns)
            log.debug("deleted ConfigMap %s/%s", self.ns, self.name)
        except k.client.ApiException as exc:
            if exc.status != 404:
                log.error("could not delete ConfigMap %s/%s (%s); delete it by hand: kubectl delete configmap -n %s %s",
                          self.ns, self.name, exc.status, self.ns, self.name)
        except Exception as exc:
            log.error("could not delete ConfigMap %s/%s (%s); delete it by hand: kubectl delete configmap -n %s %s",
                      self.ns, self.name, exc, self.ns, self.name)

    def _check_identity(self, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        labels = meta.get("labels") or {}
        want = self.spec.identity_labels()
        run = (meta.get("annotations") or {}).get(ANNOTATION_RUN, labels.get(LABEL_RUN))
        if labels.get(LABEL_RUN) != want[LABEL_RUN] or labels.get(LABEL_STEP) != want[LABEL_STEP] or (
                run is not None and run != self.spec.run):
            raise JobConflictError(
                f"job {self.ns}/{self.name} already exists but belongs to run {run!r} step {labels.get(LABEL_STEP)!r}, "
                f"not run {self.spec.run!r} step {self.spec.step}; delete it ({delete_command(self.backend, self.ns, self.name)}) "
                "or use another run name")

    def _wait_gone(self) -> None:
        deadline = time.monotonic() + self.opts.delete_wait_s
        while self._get() is not None:
            if time.monotonic() > deadline:
                raise LaunchError(f"job {self.ns}/{self.name} was deleted but is still there after "
                                  f"{self.opts.delete_wait_s:.0f}s (a finalizer?); check kubectl describe")
            self._sleep(min(1.0, self.opts.watch_window_s))

    # ---- follow ---------------------------------------------------------------------------------
    # ---- delete ---------------------------------------------------------------------------------
    def _delete_if_ours(self) -> None:
        try:
            obj = self._get()
            if obj is not None:
                self._check_identity(obj)
                self._delete()
                return
        except Exception as exc:
            log.debug("no job to clean up after an interrupted create: %s", exc)
        if self._config_made:
            self._delete_config()

    def _delete(self) -> None:
        """Delete the job and its ConfigMap."""
        self._delete_job()
        self._delete_config()

    def _delete_job(self) -> None:
        k = kubernetes()
        try:
            self.apis.custom.delete_namespaced_custom_object(
                *self._co(), self.name, body=k.client.V1DeleteOptions(propagation_policy="Foreground"))
            log.info("deleted job %s/%s", self.ns, self.name)
        except k.client.ApiException as exc:
            if exc.status == 404:
                return
            log.error("could not delete job %s/%s (%s); delete it by hand: %s", self.ns, self.name,
                      translate(exc, verb="delete", resource=self.resource, namespace=self.ns, name=self.name),
                      delete_command(self.backend, self.ns, self.name))
        except Exception as exc:
            log.error("could not delete job %s/%s (%s); delete it by hand: %s", self.ns, self.name, exc,
                      delete_command(self.backend, self.ns, self.name))


def delete_run_jobs(run: str, namespace: str, *, pipeline: bool = False, apis: KubeApis | None = None,
                    backends: list[JobBackend] | None = None) -> list[str]:
    """Delete every job labelled with run `run` in `namespace` (`pipeline`: with pipeline run `run`, so the jobs of
    every run in it, e.g. an experiment pipeline's cells), and their train-config ConfigMaps (a pipeline's exit
    handler, `cdseg launch cleanup`); the names of the jobs deleted.

    Covers a launcher killed without a chance to clean up (SIGKILL, a node lost). A backend whose
    resource the cluster does not serve is skipped.
    """
    k = kubernetes()
    apis = apis or connect()
    label, annotation = (LABEL_PIPELINE_RUN, ANNOTATION_PIPELINE_RUN) if pipeline else (LABEL_RUN, ANNOTATION_RUN)
    kind = "pipeline run" if pipeline else "run"
    what = f"{kind} {run}"
    if not label_value(run):  # an empty value would select the jobs labelled empty
        raise ConfigError(f"{kind} {run!r} has no letter or digit, so no job is labelled with it; give the id the "
                          "jobs were launched with")
    selector = f"{label}={label_value(run)}"
    deleted: list[str] = []
    for backend in backends if backends is not None else all_backends():
        try:
            found = apis.custom.list_namespaced_custom_object(backend.group, backend.version, namespace,
                                                              backend.plural, label_selector=selector)
        except k.client.ApiException as exc:
            if exc.status == 404 and not status_body(exc).get("details"):
                continue  # this kind is not served here
            raise translate(exc, verb="list", resource=resource(backend), namespace=namespace,
                            backend=backend) from exc
        for obj in found.get("items") or []:
            meta = obj.get("metadata") or {}
            if (meta.get("annotations") or {}).get(annotation, run) != run or meta.get("deletionTimestamp"):
                continue  # a truncated label shared by another run, or already going
            try:
                apis.custom.delete_namespaced_custom_object(
                    backend.group, backend.version, namespace, backend.plural, meta["name"],
                    body=k.client.V1DeleteOptions(propagation_policy="Foreground"))
            except k.client.ApiException as exc:
                if exc.status != 404:
                    raise translate(exc, verb="delete", resource=resource(backend), namespace=namespace,
                                    name=meta["name"]) from exc
            log.info("deleted %s %s/%s left by %s", backend.kind, namespace, meta["name"], what)
            deleted.append(meta["name"])
    _delete_run_configs(apis, run, namespace, selector, annotation, what)
    return deleted


def _delete_run_configs(apis: KubeApis, run: str, namespace: str, selector: str, annotation: str, what: str) -> None:
    """Delete the train-config ConfigMaps the launcher made for run `run` (`selector`, `annotation`: its label and
    unabridged name, of the run or the pipeline run); the garbage collector does it too once their job is gone, but
    a launcher killed between creating one and its job leaves it unowned."""
    k = kubernetes()
    managed = f"{selector},app.kubernetes.io/managed-by={COMMON_LABELS['app.kubernetes.io/managed-by']}"
    try:
        found = apis.core.list_namespaced_config_map(namespace, label_selector=managed)
    except k.client.ApiException as exc:
        raise translate(exc, verb="list", resource="configmaps", namespace=namespace) from exc
    for cm in found.items or []:
        meta = cm.metadata
        if (meta.annotations or {}).get(annotation, run) != run or meta.deletion_timestamp:
            continue
        try:
            apis.core.delete_namespaced_config_map(meta.name, namespace)
        except k.client.ApiException as exc:
            if exc.status != 404:
                raise translate(exc, verb="delete", resource="configmaps", namespace=namespace, name=meta.name) from exc
        log.info("deleted ConfigMap %s/%s left by %s", namespace, meta.name, what)
