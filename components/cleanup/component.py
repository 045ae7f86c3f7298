"""Cleanup component: the pipeline's exit task, deleting the training jobs its run left behind."""

from kfp import dsl

from components.settings import DEFAULT_CPU_IMAGE


@dsl.component(base_image=DEFAULT_CPU_IMAGE, install_kfp_package=False)
def cleanup(
    run_id: str,
    launch_mode: str = "local",
    config: dict = {},  # noqa: B006 (KFP needs a literal default)
    namespace: str = "",
    api_host: str = "",
) -> int:
    """Delete every training job (TrainJob or PyTorchJob) and train-config ConfigMap labelled with the run's id.

    The exit task of the pipelines' exit handler (the task pipeline's and the experiment pipeline's): it runs
    however the run ends (succeeded, failed, cancelled), and covers a train task's launcher that was killed
    without a chance to delete its job (SIGKILL, a lost node). What
    `cdseg launch cleanup --pipeline-run <id> --run-id <id>` does.

    Args:
        run_id: the pipeline run's id, which the train tasks label their jobs with (`cdseg.io/pipeline-run`;
            the task pipeline's also `cdseg.io/run`, an experiment cell's run label is its own id).
        launch_mode: the train tasks' launch mode; `local` made no job: nothing to do (and no cluster needed).
        config: the run's `config` parameter; only its `namespace` is read (an exit task may depend on no task,
            so not on the configure task's outputs).
        namespace: the jobs' namespace, winning over config's (empty: config's, else this pod's).
        api_host: Kubernetes API URL (tests); empty: in-cluster config, else ~/.kube/config.

    Returns:
        How many jobs were deleted.
    """
    from components.artifacts import setup_logging
    from components.run_config import jobs_namespace
    from components.train.job import delete_left_jobs

    setup_logging()
    return delete_left_jobs(run_id, launch_mode=launch_mode, namespace=namespace or jobs_namespace(config),
                            api_host=api_host)
