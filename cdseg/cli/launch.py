"""`cdseg launch`: run one incremental step as a TrainJob or PyTorchJob (or print it with --dry-run)."""

from __future__ import annotations

import argparse
import logging
import sys

from cdseg.cli.command import Command
from cdseg.launch.config import CleanupConfig, LaunchConfig

log = logging.getLogger("cdseg.launch")

EPILOG = """\
examples:
  cdseg launch --run exp1 --step 0 --task 222a --image ghcr.io/cdseg/cdseg:0.1.0 --replicas 2 --gpus 1 \\
      -- --method mib-cd --data.dataset s3://bucket/prepared --output s3://bucket/runs/exp1
  cdseg launch --config k8s/overlays/kind/launch.yaml --step 1 --backend trainjob --dry-run > job.yaml

Everything after `--` is an option of `cdseg train` (after --train-args, if any); they are resolved
here into the pods' config file (a ConfigMap created and deleted with the job; the pods run
`cdseg train --config /etc/cdseg/train.yaml`); --task.name and --task.step come from --task and --step.
--dry-run prints the ConfigMap and the job (kubectl apply -f takes both).
--backend auto (the default) uses whichever kind the cluster serves, TrainJob first.
exit codes: 0 job succeeded; 2 bad option or a cluster set-up problem (missing CRD, namespace,
permission, image); 1 the job failed, timed out, never started (--pending-timeout) or the API kept
failing (it has been deleted); 130 cancelled (SIGTERM, Ctrl-C; it has been deleted).
Errors are one line (plus the job's log tail); --debug adds the traceback."""


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("extra_train_args", nargs="*", metavar="-- TRAIN_ARGS",
                        help="arguments of `cdseg train`, after a `--`")


def run(cfg: LaunchConfig, extra: argparse.Namespace) -> int:
    """Build the step's job; print it (--dry-run) or run it to completion."""
    import yaml

    from cdseg.errors import UserError
    from cdseg.launch import JobCancelledError, LaunchError, build_job, run_job
    from cdseg.launch.trainconfig import config_map

    spec = cfg.to_spec(list(getattr(extra, "extra_train_args", None) or []))
    if cfg.dry_run:
        # the ConfigMap first: `kubectl apply -f` creates it before the job whose pods mount it
        sys.stdout.write(yaml.safe_dump_all([config_map(spec), build_job(spec)], sort_keys=False))
        return 0
    try:
        result = run_job(spec, kubeconfig=cfg.kubeconfig, context=cfg.context, in_cluster=cfg.in_cluster,
                         options=cfg.run_options())
    except LaunchError as exc:
        if isinstance(exc, UserError):
            raise  # a set-up problem: exit 2, one line
        # the job's failure or the cluster's, not a bug of the launcher: the message (and log tail), no traceback
        log.error("%s", exc, exc_info=bool(getattr(extra, "debug", False)))
        return 130 if isinstance(exc, JobCancelledError) else 1
    log.info("job %s/%s %s in %.0fs%s", result.namespace, result.name, result.state.phase.lower(), result.duration_s,
             " (adopted from an earlier attempt)" if result.adopted else "")
    return 0


def cleanup(cfg: CleanupConfig) -> int:
    """Delete every job and ConfigMap still labelled with the run (or the pipeline run); log their names."""
    from cdseg.launch import connect, delete_run_jobs

    apis = connect(cfg.kubeconfig, cfg.context, cfg.in_cluster)
    for run, pipeline in ((cfg.run_id, False), (cfg.pipeline_run, True)):
        if run:
            deleted = delete_run_jobs(run, cfg.namespace, pipeline=pipeline, apis=apis)
            log.info("%s %s: %s", "pipeline run" if pipeline else "run", run,
                     f"deleted {', '.join(deleted)}" if deleted else "no job left")
    return 0


CLEANUP = Command(
    name="launch cleanup",
    help="delete the training jobs (and their ConfigMaps) a run left behind",
    description="Delete every TrainJob and PyTorchJob labelled cdseg.io/run=<run id> (--run-id) or "
                "cdseg.io/pipeline-run=<pipeline run id> (--pipeline-run: every run of the pipeline run, such as an "
                "experiment pipeline's cells) in the namespace, and their train-config ConfigMaps: what a launcher "
                "killed without a chance to clean up (SIGKILL, a lost node) left. The pipelines' exit handler runs "
                "the same deletion; run it by hand for a `cdseg launch` that was killed, or a pipeline run whose exit "
                "task did not run. A kind the cluster does not serve is skipped.",
    config=CleanupConfig,
    run=cleanup,
    epilog="exit codes: 0 done (also when nothing was left); 2 bad option, kubeconfig or permission; 1 the API "
           "server kept failing.",
)

COMMAND = Command(
    name="launch",
    help="run one incremental step as a TrainJob or PyTorchJob on Kubernetes",
    description="Run one incremental step of `cdseg train` as a Kubeflow Trainer v2 TrainJob or a Training "
                "Operator v1 PyTorchJob: create it (or adopt the one a previous attempt created), stream rank 0's "
                "log, wait for the end, and delete it on failure, timeout, pending timeout or cancellation.",
    config=LaunchConfig,
    run=run,
    add_arguments=_add_arguments,
    epilog=EPILOG,
)

COMMANDS = {"launch": COMMAND, "launch cleanup": CLEANUP}
