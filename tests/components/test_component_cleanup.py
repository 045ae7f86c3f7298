"""The pipeline's exit task (`components.cleanup`) and `cdseg launch cleanup` against kmock: every job of either
kind and every train-config ConfigMap labelled with the run go, another run's stay; local mode touches nothing."""

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


@pytest.fixture()
def cluster() -> Iterator[FakeCluster]:
    yield from make_cluster(namespace="cdseg")


def leave_jobs(cluster: FakeCluster) -> list[str]:
    """What launchers killed by SIGKILL leave: a TrainJob (step 0) and a PyTorchJob (step 1) of RUN with their
    ConfigMaps, a ConfigMap whose job was never created (step 2), and another run's job and ConfigMap."""
    import kmock as km

    left = []
    for step, backend in ((0, "trainjob"), (1, "pytorchjob"), (2, None), (0, "other")):
        spec = JobSpec(run="other-run" if backend == "other" else RUN, step=step, task="222a", image="img")
        kind = get_backend("pytorchjob" if backend == "other" else backend or "trainjob")
        resource = km.resource(f"{kind.group}/{kind.version}/{kind.plural}")
        if backend is not None:
            cluster.setup(lambda kmock, r=resource, s=spec, b=kind: kmock.objects.__setitem__(
                (r, "cdseg", s.name), b.build(s)))
        cluster.setup(lambda kmock, s=spec: kmock.objects.__setitem__((CONFIGMAPS, "cdseg", s.name), config_map(s)))
        left.append(spec.name)
    return left


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
    assert main(["launch", "cleanup", "--namespace", "cdseg"]) == 2, "the run id is required"
