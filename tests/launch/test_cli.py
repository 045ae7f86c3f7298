"""`cdseg launch`: options, train arguments after --, --dry-run, errors as exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cdseg.cli.main import main
from cdseg.launch.config import LaunchConfig

from .jobspecs import DRY_RUN_ARGS, DRY_RUN_TRAINJOB_ARGS, dry_run_output, pods_config

ROOT = Path(__file__).resolve().parents[2]


def test_dry_run_prints_a_valid_job(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(DRY_RUN_ARGS)
    assert rc == 0
    config_map, job = dry_run_output(capsys.readouterr().out)
    worker = job["spec"]["pytorchReplicaSpecs"]["Worker"]
    container = worker["template"]["spec"]["containers"][0]
    assert container["command"][-2:] == ["--config", "/etc/cdseg/train.yaml"]
    cfg = pods_config(config_map)
    assert cfg["method"] == "mib-cd" and cfg["output"] == "s3://b/runs/exp1" and cfg["task"] == {
        "name": "222a", "step": 1, "filter_mode": "overlap", "seed": 1337}
    assert config_map["metadata"]["name"] == job["metadata"]["name"]
    assert config_map["metadata"]["labels"]["cdseg.io/run"] == "exp1"
    mount = {"name": "train-config", "mountPath": "/etc/cdseg", "readOnly": True}
    assert mount in container["volumeMounts"]
    assert {"name": "train-config", "configMap": {"name": job["metadata"]["name"], "items": [
        {"key": "train.yaml", "path": "train.yaml"}]}} in worker["template"]["spec"]["volumes"]
    assert job["spec"]["nprocPerNode"] == "2" and worker["replicas"] == 1
    assert worker["template"]["spec"]["nodeSelector"] == {"pool": "gpu"}


def test_dry_run_prints_a_trainjob(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(DRY_RUN_TRAINJOB_ARGS) == 0
    config_map, job = dry_run_output(capsys.readouterr().out)
    assert job["kind"] == "TrainJob" and job["apiVersion"] == "trainer.kubeflow.org/v1alpha1"
    spec = job["spec"]
    assert spec["runtimeRef"] == {"name": "cdseg-torch", "kind": "TrainingRuntime", "apiGroup": "trainer.kubeflow.org"}
    trainer = spec["trainer"]
    assert trainer["numNodes"] == 2 and trainer["numProcPerNode"] == 2
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == 2
    assert trainer["command"][:6] == ["python", "-m", "cdseg.train.torchrun", "-m", "cdseg", "train"]
    assert trainer["command"][-2:] == ["--config", "/etc/cdseg/train.yaml"]
    assert pods_config(config_map)["method"] == "mib-cd"
    (patch,) = spec["runtimePatches"]
    assert patch["manager"] == "cdseg.io/launcher"
    (node,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    pod = node["template"]["spec"]["template"]["spec"]
    assert node["name"] == "node" and pod["nodeSelector"] == {"pool": "gpu"}
    # the file reaches the runtime's pods through the patch (a TrainJob's trainer has no volumes of its own)
    assert {"name": "train-config", "mountPath": "/etc/cdseg", "readOnly": True} in pod["containers"][0]["volumeMounts"]
    assert any(v["name"] == "train-config" and v["configMap"]["name"] == job["metadata"]["name"] for v in pod["volumes"])
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"


def test_dry_run_auto_prints_a_trainjob(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [a for a in DRY_RUN_ARGS if a not in ("--backend", "pytorchjob")]
    assert main(argv) == 0
    assert dry_run_output(capsys.readouterr().out)[1]["kind"] == "TrainJob"


def test_config_file_and_extra_args(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    rc = main(["launch", "--config", str(ROOT / "k8s/overlays/kind/launch.yaml"), "--step", "1", "--dry-run",
               "--backend", "pytorchjob",
               "--", "--prev-checkpoint", "/data/runs/kind-demo/step-0/model"])
    assert rc == 0
    config_map, job = dry_run_output(capsys.readouterr().out)
    cfg = pods_config(config_map)  # the config file's train_args, then those after --, resolved
    assert cfg["model"]["pretrained"] is False and cfg["prev_checkpoint"] == "/data/runs/kind-demo/step-0/model"
    assert cfg["task"]["name"] == "222a" and cfg["task"]["step"] == 1 and cfg["trainer"]["epochs"] == 1


@pytest.mark.parametrize(("argv", "message"), [
    (["--step", "1", "--dry-run", "--", "--task.step", "2"], "disagrees with step=1"),
    (["--gpus", "1", "--nproc-per-node", "2", "--dry-run"], "use one process per GPU"),
    (["--replicas", "0", "--dry-run"], "--replicas"),
    (["--backend", "slurm", "--dry-run"], "--backend"),
    (["--backend", "trainjob", "--runtime", " ", "--dry-run"], "runtime"),
    (["--dry-run", "--", "--trainer.epochs", "many"], "--trainer.epochs"),
    (["--dry-run", "--", "--no-such-option"], "not an option of cdseg train"),
])
def test_bad_options_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["launch", *argv]) == 2
    assert message in capsys.readouterr().err


def test_no_kubeconfig_is_exit_2(tmp_path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    rc = main(["launch", "--kubeconfig", str(tmp_path / "nope"), "--run", "x"])
    assert rc == 2
    assert "--kubeconfig" in capsys.readouterr().err


def test_every_field_documented() -> None:
    assert all(f.description for f in LaunchConfig.model_fields.values())


def _kubeconfig(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": url}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "u", "namespace": "cdseg"}}],
    }))
    return path


@pytest.mark.parametrize(("final", "rc"), [("Succeeded", 0), ("Failed", 1)])
def test_launch_against_a_fake_cluster(final: str, rc: int, cluster, tmp_path: Path,  # type: ignore[no-untyped-def]
                                       capsys: pytest.CaptureFixture[str]) -> None:
    from cdseg.launch import job_name

    op = cluster.spawn(cluster.operator(job_name("cli", 0), ["Created", "Running", final], log=b"hello from rank 0\n"))
    code = main(["launch", "--run", "cli", "--step", "0", "--kubeconfig", str(_kubeconfig(tmp_path, cluster.url)),
                 "--backend", cluster.backend.name, "--timeout", "20", "--", "--method", "ft"])
    op.result(10)
    assert code == rc
    if rc:
        err = capsys.readouterr().err
        assert f"failed: {cluster.backend.kind}Failed" in err and "Traceback" not in err


@pytest.mark.parametrize(("argv", "message"), [
    (["--backend", "trainjob", "--replicas", "2", "--elastic-min", "1"], "no elastic policy"),
    (["--backend", "pytorchjob", "--replicas", "2", "--elastic-min", "3"], "elastic_min <= replicas"),
    (["--backend", "pytorchjob", "--elastic-max", "3"], "needs elastic_min"),
])
def test_bad_elastic_options_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["launch", *argv, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_elastic_dry_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["launch", "--backend", "pytorchjob", "--replicas", "3", "--elastic-min", "2", "--dry-run"]) == 0
    job = dry_run_output(capsys.readouterr().out)[1]
    assert job["spec"]["elasticPolicy"]["minReplicas"] == 2 and job["spec"]["elasticPolicy"]["maxReplicas"] == 3


def test_sigterm_to_the_cli_deletes_the_job(cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`cdseg launch` in its own process, stopped as a pod or a terminal stops it: exit 130, one line, no job."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from cdseg.launch import job_name

    name = job_name("cli-term", 0)
    op = cluster.spawn(cluster.operator(name, ["Created", "Running"], log=b"epoch 1\n"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "cdseg", "launch", "--run", "cli-term", "--step", "0",
                             "--kubeconfig", str(_kubeconfig(tmp_path, cluster.url)), "--backend", cluster.backend.name,
                             "--", "--method", "ft"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        # the launcher resolves the train config first, which imports torch (cdseg.losses): seconds on a busy machine
        deadline = time.monotonic() + 90
        while not (cluster.job(name) and cluster.logs.get(cluster.pod_name(name))):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    op.result(10)
    assert proc.returncode == 130, err
    assert "cancelled by signal SIGTERM" in err and "Traceback" not in err
    assert cluster.job(name) is None and cluster.left_behind() == []


@pytest.mark.parametrize(("argv", "deadline"), [
    (["--timeout", "5400.5"], 5401),                           # the step's budget reaches the server side
    (["--timeout", "5400", "--active-deadline", "7200"], 7200),
    ([], None),
])
@pytest.mark.parametrize("backend", ["trainjob", "pytorchjob"])
def test_the_jobs_deadline_is_the_steps_budget(argv: list[str], deadline: int | None, backend: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["launch", "--backend", backend, *argv, "--dry-run"]) == 0
    spec = dry_run_output(capsys.readouterr().out)[1]["spec"]
    found = spec.get("activeDeadlineSeconds") if backend == "trainjob" else spec["runPolicy"].get("activeDeadlineSeconds")
    assert found == deadline


def test_backend_choices_are_the_registered_backends() -> None:
    """A backend is registered once (`BACKEND_NAMES`); the job model's choices and the component's modes follow."""
    import typing

    from cdseg.launch import BACKEND_NAMES, JobSpec
    from components.settings import LAUNCH_MODES

    assert typing.get_args(JobSpec.model_fields["backend"].annotation) == ("auto", *BACKEND_NAMES)
    assert ("local", "auto", *BACKEND_NAMES) == LAUNCH_MODES
