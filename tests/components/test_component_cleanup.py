"""The pipelines' exit task (`components.cleanup`) and `cdseg launch cleanup` against kmock: every job of either
kind and every train-config ConfigMap labelled with the run, or with the pipeline run (an experiment pipeline's
cells), go, another run's stay; local mode touches nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from launch.cluster import CONFIGMAPS, FakeCluster, make_cluster

from cdseg.cli.main import main
from cdseg.errors import ConfigError
from cdseg.launch import JobSpec, get_backend
from cdseg.launch.trainconfig import config_map
from components.cleanup import cleanup

RUN = "run-4567"
#: an experiment pipeline run's id (KFP's run ids are UUIDs); its cells' runs are `<id>-<task>-<method>-s<seed>`
PIPELINE = "8d1f3c5e-2a4b-4c6d-8e0f-1a2b3c4d5e6f"


@pytest.fixture()
def cluster() -> Iterator[FakeCluster]:
    yield from make_cluster(namespace="cdseg")


def leave_jobs(cluster: FakeCluster) -> list[str]:
    """What launchers killed by SIGKILL leave: a TrainJob (step 0) and a PyTorchJob (step 1) of RUN with their
    ConfigMaps, a ConfigMap whose job was never created (step 2), and another run's job and ConfigMap."""

    left = []
    for step, backend in ((0, "trainjob"), (1, "pytorchjob"), (2, None), (0, "other")):
        spec = JobSpec(run="other-run" if backend == "other" else RUN, step=step, task="222a", image="img")
        left.append(_leave(cluster, spec, "pytorchjob" if backend == "other" else backend))
    return left


def _leave(cluster: FakeCluster, spec: JobSpec, backend: str | None) -> str:
    """Put `spec`'s ConfigMap, and its job of `backend` unless None, in the cluster, as a killed launcher leaves
    them; the job's name."""
    import kmock as km

    kind = get_backend(backend or "trainjob")
    resource = km.resource(f"{kind.group}/{kind.version}/{kind.plural}")
    if backend is not None:
        cluster.setup(lambda kmock: kmock.objects.__setitem__((resource, "cdseg", spec.name), kind.build(spec)))
    cluster.setup(lambda kmock: kmock.objects.__setitem__((CONFIGMAPS, "cdseg", spec.name), config_map(spec)))
    return spec.name


def leave_cells(cluster: FakeCluster) -> list[str]:
    """What an experiment pipeline run leaves when its train tasks' launchers are killed by SIGKILL: jobs of several
    cells of both kinds (each cell's run id its own, all labelled with the pipeline run), a cell's ConfigMap whose
    job was never created, and a cell of another pipeline run, with its ConfigMap."""

    left = []
    for pipeline, method, seed, step, backend in ((PIPELINE, "ft", 0, 0, "trainjob"), (PIPELINE, "mib", 1, 1, "pytorchjob"),
                                                  (PIPELINE, "mib-cd", 0, 2, "trainjob"), (PIPELINE, "mib-cd", 1, 1, None),
                                                  ("other-pipeline", "ft", 0, 0, "pytorchjob")):
        spec = JobSpec(run=f"{pipeline}-222a-{method}-s{seed}", pipeline_run=pipeline, step=step, task="222a",
                       image="img")
        left.append(_leave(cluster, spec, backend))
    return left


def test_the_exit_task_deletes_every_cells_jobs_by_the_pipeline_run(cluster: FakeCluster) -> None:
    """The experiment pipeline's exit task gets the pipeline run's id: no cell's run label equals it, the pipeline-run
    label on every cell's job and ConfigMap does."""
    from cdseg.launch import delete_run_jobs

    names = leave_cells(cluster)
    assert len(cluster.left_behind()) == 4 + 5
    assert delete_run_jobs(PIPELINE, "cdseg", apis=cluster.apis()) == [], "the run label matches no cell"
    assert len(cluster.left_behind()) == 4 + 5
    assert cleanup.python_func(run_id=PIPELINE, launch_mode="auto", namespace="cdseg", api_host=cluster.url) == 3
    other = names[-1]
    assert cluster.left_behind() == sorted(f"{k}/{other}" for k in (
        "resource(group='kubeflow.org', version='v1', plural='pytorchjobs')",
        "resource(group='', version='v1', plural='configmaps')")), "only the other pipeline run's job and ConfigMap stay"
    assert cleanup.python_func(run_id=PIPELINE, launch_mode="auto", namespace="cdseg", api_host=cluster.url) == 0
    # and the other pipeline run's, by its own id: nothing is left
    assert cleanup.python_func(run_id="other-pipeline", launch_mode="auto", namespace="cdseg",
                               api_host=cluster.url) == 1
    assert cluster.left_behind() == []


def test_a_truncated_pipeline_run_label_deletes_only_its_own_run(cluster: FakeCluster) -> None:
    """Two pipeline runs whose labels are cut to the same 63 characters: the unabridged name (annotation) decides."""
    import kmock as km

    from cdseg.launch import delete_run_jobs

    long = "p" * 70
    kind = get_backend("pytorchjob")
    resource = km.resource(f"{kind.group}/{kind.version}/{kind.plural}")
    specs = [JobSpec(run=f"cell-{i}", pipeline_run=long + str(i), step=0, task="222a", image="img") for i in (1, 2)]
    assert specs[0].identity_labels()["cdseg.io/pipeline-run"] == specs[1].identity_labels()["cdseg.io/pipeline-run"]
    for spec in specs:
        cluster.setup(lambda kmock, s=spec: kmock.objects.__setitem__((resource, "cdseg", s.name), kind.build(s)))
        cluster.setup(lambda kmock, s=spec: kmock.objects.__setitem__((CONFIGMAPS, "cdseg", s.name), config_map(s)))
    assert delete_run_jobs(long + "1", "cdseg", pipeline=True, apis=cluster.apis()) == [specs[0].name]
    assert all(specs[1].name in left for left in cluster.left_behind()) and len(cluster.left_behind()) == 2


def test_the_exit_task_deletes_the_runs_jobs_of_both_kinds(cluster: FakeCluster) -> None:
    names = leave_jobs(cluster)
    deleted = cleanup.python_func(run_id=RUN, launch_mode="auto", namespace="cdseg", api_host=cluster.url)
    assert deleted == 2
    other = names[-1]
    assert cluster.left_behind() == sorted(f"{k}/{other}" for k in (
        "resource(group='kubeflow.org', version='v1', plural='pytorchjobs')",
        "resource(group='', version='v1', plural='configmaps')")), "only the other run's job and ConfigMap stay"
    # nothing left: a second run of the exit task (a KFP retry) is a no-op
    assert cleanup.python_func(run_id=RUN, launch_mode="auto", namespace="cdseg", api_host=cluster.url) == 0


def test_the_namespace_comes_from_the_runs_config(cluster: FakeCluster) -> None:
    """The pipeline passes its config parameter (the exit task cannot take the configure task's outputs)."""
    leave_jobs(cluster)
    assert cleanup.python_func(run_id=RUN, launch_mode="auto", config={"namespace": " cdseg ", "queue": "q"},
                               api_host=cluster.url) == 2


@pytest.mark.parametrize("config", [{}, {"namespace": 7}, {"nmspace": "cdseg"}])
def test_a_config_without_a_usable_namespace_means_the_pods_own(config: dict[str, object]) -> None:
    from components.run_config import jobs_namespace

    assert jobs_namespace(config) == ""


def test_local_mode_needs_no_cluster(cluster: FakeCluster) -> None:
    leave_jobs(cluster)
    assert cleanup.python_func(run_id=RUN, launch_mode="local", namespace="", api_host="http://127.0.0.1:9") == 0
    assert not cluster.launcher_requests()


@pytest.mark.parametrize(("kwargs", "match"), [({"launch_mode": "slurm"}, "launch_mode"),
                                               ({"run_id": "{{$.pipeline_job_uuid}}"}, "run_id")])
def test_bad_parameters_are_one_line(cluster: FakeCluster, kwargs: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        cleanup.python_func(**{"run_id": RUN, "launch_mode": "auto", "api_host": cluster.url, **kwargs})
    assert not cluster.launcher_requests()


def test_the_cli_does_the_same(cluster: FakeCluster, tmp_path: Path) -> None:
    names = leave_jobs(cluster)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": cluster.url}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "u"}}]}))
    assert main(["launch", "cleanup", "--run-id", RUN, "--namespace", "cdseg", "--kubeconfig", str(kubeconfig)]) == 0
    assert all(names[-1] in left for left in cluster.left_behind()) and len(cluster.left_behind()) == 2
    assert main(["launch", "cleanup", "--namespace", "cdseg"]) == 2, "the run id or the pipeline run is required"
    # an experiment pipeline run's cells, by the pipeline run's id
    cells = leave_cells(cluster)
    assert main(["launch", "cleanup", "--pipeline-run", PIPELINE, "--namespace", "cdseg", "--kubeconfig",
                 str(kubeconfig)]) == 0
    assert sorted(left.rsplit("/", 1)[1] for left in cluster.left_behind()) == sorted([names[-1], cells[-1]] * 2)
    # both at once: the other run's, and the other pipeline run's
    assert main(["launch", "cleanup", "--run-id", "other-run", "--pipeline-run", "other-pipeline", "--namespace",
                 "cdseg", "--kubeconfig", str(kubeconfig)]) == 0
    assert cluster.left_behind() == []
