"""`cdseg launch`: options, train arguments after --, --dry-run, errors as exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cdseg.cli.main import main
from cdseg.launch.config import LaunchConfig

from .jobspecs import DRY_RUN_ARGS

ROOT = Path(__file__).resolve().parents[2]


def test_dry_run_prints_a_valid_job(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(DRY_RUN_ARGS)
    assert rc == 0
    job = yaml.safe_load(capsys.readouterr().out)
    worker = job["spec"]["pytorchReplicaSpecs"]["Worker"]
    container = worker["template"]["spec"]["containers"][0]
    assert container["command"][-6:] == ["--method", "mib-cd", "--output", "s3://b/runs/exp1", "--task.step", "1"]
    assert job["spec"]["nprocPerNode"] == "2" and worker["replicas"] == 1
    assert worker["template"]["spec"]["nodeSelector"] == {"pool": "gpu"}


def test_config_file_and_extra_args(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    rc = main(["launch", "--config", str(ROOT / "k8s/overlays/kind/launch.yaml"), "--step", "1", "--dry-run",
               "--", "--prev-checkpoint", "/data/runs/kind-demo/step-0/model"])
    assert rc == 0
    job = yaml.safe_load(capsys.readouterr().out)
    cmd = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["command"]
    assert "--no-model.pretrained" in cmd and cmd[-4:-2] == ["--prev-checkpoint", "/data/runs/kind-demo/step-0/model"]


@pytest.mark.parametrize(("argv", "message"), [
    (["--step", "1", "--dry-run", "--", "--task.step", "2"], "disagrees with step=1"),
    (["--gpus", "1", "--nproc-per-node", "2", "--dry-run"], "use one process per GPU"),
    (["--replicas", "0", "--dry-run"], "--replicas"),
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
                 "--timeout", "20", "--", "--method", "ft"])
    op.result(10)
    assert code == rc
    if rc:
        assert "failed: PyTorchJobFailed" in capsys.readouterr().err
