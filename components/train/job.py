"""The train component's job modes: stage inputs on shared storage, run the step as a TrainJob or PyTorchJob.

The job's pods never depend on this pod's filesystem: the dataset and the previous checkpoint are
passed by URI (s3://, or a path on a PVC mounted in both this pod and the job's pods) and the job
writes its checkpoint under `workdir`. `cdseg.launch.run_job` creates (or, on a KFP retry, adopts)
the job, streams the master's log here, and raises when the job fails, times out or cannot start,
which fails the KFP step. SIGTERM or SIGINT (a cancelled run; the component's command `exec`s Python
so that the signal reaches it) deletes the job before the step ends.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from components import artifacts
from components.train.run import TrainRequest, train_config

log = logging.getLogger("cdseg.components.train")

#: the namespace of the pod we run in (KFP multi-user: the profile's namespace)
_POD_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def reachable(uri: str, workdir: str) -> bool:
    """Whether the job's pods can read `uri`: object storage, or a path under workdir (the shared volume)."""
    from cdseg import storage

    if storage.is_remote(uri):
        return True
    return not storage.is_remote(workdir) and Path(uri).resolve().is_relative_to(Path(workdir).resolve())


def stage(uri: str, dest: str) -> None:
    """Copy the folder `uri` to `dest` on shared storage (once: a KFP retry finds it there already)."""
    from cdseg import storage

    if uri != dest and not storage.exists(storage.join(dest, storage.MANIFEST_NAME)):
        log.info("staging %s -> %s for the job's pods", uri, dest)
        storage.upload_dir(uri, dest, replace=True)


def namespace_of(req: TrainRequest) -> str:
    """The job's namespace: the one given, else this pod's, else `cdseg`."""
    return pod_namespace(str(req.job.get("namespace") or ""))


def pod_namespace(given: str) -> str:
    """`given`, else the namespace of the pod we run in, else `cdseg`."""
    if given:
        return given
    try:
        return _POD_NAMESPACE.read_text().strip() or "cdseg"
    except OSError:
        return "cdseg"


def api_clients(api_host: str) -> Any:
    """Kubernetes API clients: for `api_host` when given (tests, a proxy), else in-cluster / kubeconfig."""
    from cdseg.launch import KubeApis, connect
    from cdseg.launch.kube import kubernetes

    if not api_host:
        return connect()
    k = kubernetes()
    return KubeApis.from_api_client(k.client.ApiClient(k.client.Configuration(host=api_host.rstrip("/"))))


def run_as_job(req: TrainRequest, *, data: Any, prev_model: Any, poll_s: float | None = None) -> str:
    """Run the step as a cluster job (`req.launch_mode`: auto, trainjob, pytorchjob); the URI of its checkpoint."""
    from cdseg import storage
    from cdseg.launch import JobSpec, RunOptions, run_job

    base = storage.join(req.workdir, "runs", req.run_id)
    moves: list[tuple[str, str]] = []  # (artifact location, shared copy) to stage

    def shared(uri: str, dest: str) -> str:
        if reachable(uri, req.workdir):
            return uri
        moves.append((uri, dest))
        return dest

    data_uri = shared(artifacts.location(data), storage.join(base, "data"))
    prev_uri = None
    if prev_model is not None:
        prev_uri = shared(artifacts.location(prev_model), storage.join(base, "inputs", f"step-{req.step - 1}"))
    output = storage.join(base, req.method)
    cfg = train_config(req, data_uri, prev_uri, output)  # invalid options fail here, before any copy or API call
    # the job: the component's job settings, its identity, and the resolved config its pods read as a file
    spec = JobSpec(**{**req.job, "namespace": namespace_of(req)}, run=req.run_id, task=req.task, step=req.step,
                   backend=req.launch_mode, replicas=1 + req.num_workers, active_deadline=req.timeout,
                   train_config=cfg.model_dump(mode="json"))
    if isinstance(getattr(cfg, "storage", None), storage.StorageConfig):
        storage.configure(cfg.storage)  # endpoint / region from CDSEG_STORAGE__* (the pipeline's ConfigMap)
    for uri, dest in moves:
        stage(uri, dest)
    # handle_signals: a cancelled run's SIGTERM deletes the job (only takes effect in the main thread)
    options = RunOptions(timeout_s=float(req.timeout), pending_timeout_s=float(req.pending_timeout))
    if poll_s is not None:
        options.watch_window_s, options.pod_check_s, options.delete_wait_s = poll_s, poll_s, poll_s
    log.info("step %d as a %s job %s/%s (%d pod(s) x %d process(es), image %s)", req.step, req.launch_mode,
             spec.namespace, spec.name, spec.replicas, spec.nproc_per_node, spec.image)
    result = run_job(spec, apis=api_clients(req.api_host), options=options,
                     log_sink=lambda line: print(f"[{spec.name}] {line}", flush=True))
    log.info("job %s succeeded in %.0f s", result.name, result.duration_s)
    return str(storage.join(output, f"step-{req.step}", "model"))


def delete_left_jobs(run_id: str, *, launch_mode: str, namespace: str = "", api_host: str = "") -> int:
    """The cleanup component: delete every job (and train-config ConfigMap) labelled with `run_id` as its run or as
    its pipeline run (an experiment pipeline's cells label their runs with ids of their own); how many jobs.
    Nothing to do in local mode (no job was made, and there may be no cluster)."""
    from cdseg.errors import ConfigError
    from cdseg.launch import delete_run_jobs
    from components.settings import LAUNCH_MODES

    if launch_mode not in LAUNCH_MODES:
        raise ConfigError(f"cleanup: launch_mode={launch_mode!r} is not one of {', '.join(LAUNCH_MODES)}")
    if launch_mode == "local":
        log.info("launch_mode=local: the run made no cluster job; nothing to clean up")
        return 0
    if not run_id or "{{" in run_id:
        raise ConfigError(f"cleanup: run_id={run_id!r} is not a run's id; the pipeline passes its run id")
    ns = pod_namespace(namespace)
    apis = api_clients(api_host)
    # by the pipeline-run label (every job of this pipeline run), then by the run label (a job labelled before the
    # pipeline-run label existed, by a task pipeline: its run id is the pipeline run's)
    deleted = delete_run_jobs(run_id, ns, pipeline=True, apis=apis)
    deleted += [name for name in delete_run_jobs(run_id, ns, apis=apis) if name not in deleted]
    log.info("run %s: %s", run_id, f"deleted {', '.join(deleted)} in {ns}" if deleted else f"no job left in {ns}")
    return len(deleted)
