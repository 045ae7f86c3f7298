"""The options of `cdseg launch` (`LaunchConfig`: the job, `JobSpec`'s fields by the same names, and how to follow
it) and of `cdseg launch cleanup` (`CleanupConfig`: delete what a run left); both reach the cluster the same way."""

from __future__ import annotations

import math
from typing import ClassVar

from pydantic import Field, model_validator

from cdseg.config import Section
from cdseg.launch.runner import RunOptions
from cdseg.launch.spec import JobSpec


class ClusterAccess(Section):
    """How the launcher reaches the API server."""

    kubeconfig: str | None = Field(None, description="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    context: str | None = Field(None, description="kubeconfig context")
    in_cluster: bool | None = Field(None, description="use the pod's service account (default: when inside a pod)")


class CleanupConfig(ClusterAccess):
    """`cdseg launch cleanup`: delete every job (of either kind) and train-config ConfigMap a run, or every run of a
    pipeline run, left behind."""

    run_id: str = Field("", description="the run whose jobs to delete: the --run given to cdseg launch, or a task "
                                        "pipeline run's id (label cdseg.io/run)")
    pipeline_run: str = Field("", description="the pipeline run whose jobs to delete, of every run in it (an "
                                              "experiment pipeline's cells): its run id (label cdseg.io/pipeline-run; "
                                              "a cdseg launch job's is its --run unless --pipeline-run)")
    namespace: str = Field(JobSpec.model_fields["namespace"].default,
                           description=JobSpec.model_fields["namespace"].description)

    @model_validator(mode="after")
    def _something(self) -> CleanupConfig:
        if not self.run_id.strip() and not self.pipeline_run.strip():
            raise ValueError("run_id and pipeline_run are both empty; give --run-id RUN (one run's jobs) or "
                             "--pipeline-run ID (every job of a pipeline run), or both")
        return self


class LaunchConfig(JobSpec, ClusterAccess):
    """One incremental step as a training job (every `JobSpec` field), plus the launcher's wait limits, clean-up
    policy and cluster access, which are not part of the job."""

    #: the arguments after `--` are only known in `to_spec`, which resolves the train config then
    resolve_on_validate: ClassVar[bool] = False

    timeout: float | None = Field(None, gt=0, description="launcher's wait limit (seconds); the job is deleted after it")
    pending_timeout: float | None = Field(1800, gt=0, description="fail (and delete) the job when its pods have not "
                                                                  "started after this many seconds (unschedulable, "
                                                                  "queued, image pulls); none: wait")
    delete_on_success: bool = Field(False, description="delete the job as soon as it succeeds (else ttl applies)")
    keep_failed: bool = Field(False, description="keep a failed job and its pods for debugging")
    dry_run: bool = Field(False, description="print the job's YAML (TrainJob or PyTorchJob, per backend) and its "
                                             "ConfigMap, and exit without contacting the cluster")

    def to_spec(self, extra_train_args: list[str] | tuple[str, ...] = ()) -> JobSpec:
        """The `JobSpec` these options describe (train arguments: config's, then `extra_train_args`, resolved into
        the pods' config file; the deadline: `deadline()`)."""
        data = {k: v for k, v in self.model_dump().items() if k in JobSpec.model_fields}  # what the job is
        data.update(train_args=[*self.train_args, *extra_train_args], active_deadline=self.deadline())
        return JobSpec(**data)

    def deadline(self) -> int | None:
        """The job's `activeDeadlineSeconds`: --active-deadline, else the step's budget (--timeout), else none."""
        if self.active_deadline is not None:
            return self.active_deadline
        return max(1, math.ceil(self.timeout)) if self.timeout is not None else None

    def run_options(self) -> RunOptions:
        """How the launcher follows the job."""
        return RunOptions(timeout_s=self.timeout, delete_on_success=self.delete_on_success,
                          keep_failed=self.keep_failed, pending_timeout_s=self.pending_timeout)
