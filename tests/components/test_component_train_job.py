"""The train component in its job modes (`pytorchjob`, `trainjob`) against kmock (a Kubernetes API emulator)
with a fake operator; and cancelled by SIGTERM to its process tree, as a cancelled KFP run is.

The component's Python function is called directly (`train_step.python_func`) with kmock's URL as the
API host: a job that succeeds fills the Model artifact from the checkpoint it wrote on shared storage; a
job that fails fails the step (the exception reaches KFP), leaving the Model artifact empty. The dataset
and the previous checkpoint are local artifacts here, so the component must stage them under workdir.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kfp import dsl
from launch.cluster import FakeCluster, make_cluster

from cdseg.errors import ConfigError
from cdseg.launch import JobFailedError, job_name
from components.train import train_step

RUN = "run-0123"


@pytest.fixture(params=["pytorchjob", "trainjob"])
def cluster(request: pytest.FixtureRequest) -> Iterator[FakeCluster]:
    yield from make_cluster(namespace="cdseg", backend=request.param)


def folder(path: Path, files: dict[str, str]) -> Path:
    path.mkdir(parents=True)
    for name, text in files.items():
        (path / name).write_text(text)
    return path


@pytest.fixture()
def inputs(tmp_path: Path) -> dict[str, Any]:
    """A 'prepared dataset' and a step-0 checkpoint as local artifacts, outside workdir."""
    data = folder(tmp_path / "artifacts" / "dataset", {"manifest.json": "{}"})
    prev = folder(tmp_path / "artifacts" / "step0", {"model.json": json.dumps({"task": "222a", "step": 0}),
                                                     "model.safetensors": "w0"})
    return {
        "data": dsl.Dataset(name="dataset", uri=str(data), metadata={}),
        "prev_model": dsl.Model(name="model", uri=str(prev), metadata={}),
        "model": dsl.Model(name="model", uri=str(tmp_path / "artifacts" / "step1"), metadata={}),
        "workdir": tmp_path / "shared",
    }


def trained_checkpoint(workdir: Path, method: str, step: int) -> Path:
    """Where the job writes its checkpoint (<workdir>/runs/<run>/<method>/step-<k>/model); the test plays the trainer."""
    card = {"task": "222a", "step": step, "method": method, "sha256": "ab" * 32, "classes": [["background", "x"]]}
    return folder(workdir / "runs" / RUN / method / f"step-{step}" / "model",
                  {"model.json": json.dumps(card), "model.safetensors": "w1"})


def call(cluster: FakeCluster, inputs: dict[str, Any], **overrides: Any) -> str:
    kwargs: dict[str, Any] = dict(
        task="222a", step=1, method="mib-cd", data=inputs["data"], model=inputs["model"],
        prev_model=inputs["prev_model"], options={"trainer.epochs": 2.0}, launch_mode=cluster.backend.name,
        workdir=str(inputs["workdir"]), namespace="cdseg", run_id=RUN, api_host=cluster.url, image="img:1",
        num_workers=1, gpus=0, timeout=60,
    )
    kwargs.update(overrides)
    return train_step.python_func(**kwargs)


def created_job(cluster: FakeCluster) -> dict[str, Any]:
    posts = [r for r in cluster.launcher_requests()
             if r.method.value == "POST" and f"/{cluster.backend.plural}" in r.url.path]
    assert len(posts) == 1
    body = posts[0].data
    return body if isinstance(body, dict) else json.loads(body)


def pods_config(cluster: FakeCluster) -> dict[str, Any]:
    """The train config the job's pods read: the file in the ConfigMap the launcher created with the job."""
    import yaml

    posts = [r for r in cluster.launcher_requests() if r.method.value == "POST" and "/configmaps" in r.url.path]
    assert len(posts) == 1
    body = posts[0].data if isinstance(posts[0].data, dict) else json.loads(posts[0].data)
    cmd = created_job(cluster)
    container = cmd["spec"]["trainer"] if cmd["kind"] == "TrainJob" else \
        cmd["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    assert container["command"][-2:] == ["--config", "/etc/cdseg/train.yaml"], "options never re-serialised"
    return dict(yaml.safe_load(body["data"]["train.yaml"]))


def test_success_fills_the_model_from_shared_storage(cluster: FakeCluster, inputs: dict[str, Any]) -> None:
    name = job_name(RUN, 1)
    ckpt = trained_checkpoint(inputs["workdir"], "mib-cd", 1)
    op = cluster.spawn(cluster.operator(name, ["Created", "Running", "Succeeded"], log=b"epoch 1\nepoch 2\n"))
    uri = call(cluster, inputs)
    op.result(10)
    assert Path(uri) == ckpt
    model = inputs["model"]
    assert (Path(model.path) / "model.safetensors").read_text() == "w1"
    assert model.metadata["uri"] == uri
    assert model.metadata["task"] == "222a" and model.metadata["step"] == 1 and model.metadata["method"] == "mib-cd"
    assert model.metadata["checksum"] == "ab" * 32

    cfg = pods_config(cluster)
    shared = inputs["workdir"].resolve()
    # the job reads its inputs from shared storage, never from this pod's artifact paths
    data_uri, prev_uri = cfg["data"]["dataset"], cfg["prev_checkpoint"]
    assert Path(data_uri).is_relative_to(shared) and (Path(data_uri) / "manifest.json").is_file()
    assert Path(prev_uri).is_relative_to(shared) and (Path(prev_uri) / "model.safetensors").read_text() == "w0"
    assert cfg["output"] == str(shared / "runs" / RUN / "mib-cd")
    assert cfg["trainer"]["epochs"] == 2
    assert cfg["task"] == {**cfg["task"], "name": "222a", "step": 1} and cfg["method"] == "mib-cd"
    assert cluster.left_behind() == [] or cluster.backend.expires, "a TrainJob and its ConfigMap go on success"
    job = created_job(cluster)
    if job["kind"] == "TrainJob":
        assert job["spec"]["trainer"]["numNodes"] == 2 and job["spec"]["activeDeadlineSeconds"] == 60
    else:
        assert job["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 1


def test_failed_job_fails_the_step(cluster: FakeCluster, inputs: dict[str, Any]) -> None:
    name = job_name(RUN, 1)
    op = cluster.spawn(cluster.operator(name, ["Created", "Running", "Failed"], log=b"Traceback\nCUDA error\n",
                                        reason="JobFailed", message="master exited with code 1"))
    with pytest.raises(JobFailedError) as info:
        call(cluster, inputs)
    op.result(10)
    assert "JobFailed" in str(info.value) and "code 1" in str(info.value)
    assert not Path(inputs["model"].path).exists() or not any(Path(inputs["model"].path).iterdir())


def test_an_experiment_cells_job_carries_its_run_and_the_pipeline_run(cluster: FakeCluster,
                                                                     inputs: dict[str, Any]) -> None:
    """An experiment pipeline's cell: its run id (`<pipeline run>-<task>-<method>-s<seed>`) names the job, and the
    pipeline run's id labels the job, its pods and its ConfigMap too, which is what the exit task deletes by."""
    pipeline = "3f2a9c1e-7b4d-4e0a-9c8b-5d6e7f809a1b"
    cell = f"{pipeline}-222a-mib-cd-s0"
    name = job_name(cell, 1)
    op = cluster.spawn(cluster.operator(name, ["Created", "Running", "Failed"], log=b"boom\n", reason="JobFailed",
                                        message="master exited with code 1"))
    with pytest.raises(JobFailedError):
        call(cluster, inputs, run_id=cell, pipeline_run=pipeline)
    op.result(10)
    job = created_job(cluster)
    posts = [r for r in cluster.launcher_requests() if r.method.value == "POST" and "/configmaps" in r.url.path]
    config_map = posts[0].data if isinstance(posts[0].data, dict) else json.loads(posts[0].data)
    if job["kind"] == "PyTorchJob":
        pods = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["metadata"]
    else:  # the runtime patch's pod template
        patch = job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
        pods = patch["template"]["spec"]["template"]["metadata"]
    for meta in (job["metadata"], config_map["metadata"], pods):
        assert meta["labels"]["cdseg.io/run"] == cell and meta["labels"]["cdseg.io/pipeline-run"] == pipeline, meta
    for meta in (job["metadata"], config_map["metadata"]):
        assert meta["annotations"]["cdseg.io/run-name"] == cell
        assert meta["annotations"]["cdseg.io/pipeline-run-name"] == pipeline
    assert job["metadata"]["name"] == name and cluster.left_behind() == [], "a failed step deletes its job"


def test_job_modes_need_shared_storage(cluster: FakeCluster, inputs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="workdir"):
        call(cluster, inputs, workdir="")
    assert not cluster.launcher_requests(), "nothing may reach the cluster before the parameters are valid"


@pytest.mark.parametrize(("overrides", "match"), [
    ({"launch_mode": "slurm"}, "launch_mode"),
    ({"prev_model": None}, "needs prev_model"),
    ({"options": {"output": "/elsewhere"}}, "set by the component"),
    ({"nproc_per_node": 0}, "nproc_per_node"),
    ({"gpus": 1, "nproc_per_node": 2}, "one process per GPU"),
])
def test_bad_parameters_fail_before_the_cluster(cluster: FakeCluster, inputs: dict[str, Any],
                                                overrides: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        call(cluster, inputs, **overrides)
    assert not cluster.launcher_requests()


def test_success_through_an_s3_workdir(cluster: FakeCluster, inputs: dict[str, Any], s3_server: str,
                                       monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """workdir = s3://...: the inputs are uploaded (manifest last), the job reads them there, the checkpoint comes back."""
    from conftest import make_bucket

    from cdseg import storage

    bucket = f"work-{cluster.backend.name}"  # the S3 server outlives the test: one bucket per backend
    make_bucket(s3_server, bucket)
    monkeypatch.setenv("CDSEG_STORAGE__ENDPOINT_URL", s3_server)  # what the pipeline's ConfigMap provides
    storage.configure(storage.StorageConfig(endpoint_url=s3_server))
    workdir = f"s3://{bucket}/cdseg"
    # the job (played by the test) writes its checkpoint to the bucket before reporting success
    ckpt = trained_checkpoint(tmp_path / "job", "mib-cd", 1)
    storage.upload_dir(str(ckpt), f"{workdir}/runs/{RUN}/mib-cd/step-1/model")
    op = cluster.spawn(cluster.operator(job_name(RUN, 1), ["Created", "Running", "Succeeded"], log=b"done\n"))
    uri = call(cluster, inputs, workdir=workdir)
    op.result(10)
    assert uri == f"{workdir}/runs/{RUN}/mib-cd/step-1/model"
    assert (Path(inputs["model"].path) / "model.safetensors").read_text() == "w1"
    cfg = pods_config(cluster)
    data_uri, prev_uri = cfg["data"]["dataset"], cfg["prev_checkpoint"]
    assert data_uri.startswith(f"{workdir}/runs/{RUN}/") and prev_uri.startswith(f"{workdir}/runs/{RUN}/")
    assert storage.read_bytes(storage.join(data_uri, "manifest.json")) == b"{}"
    assert storage.read_bytes(storage.join(prev_uri, "model.safetensors")) == b"w0"
    assert cfg["output"] == f"{workdir}/runs/{RUN}/mib-cd"


def _executor_input(cluster: FakeCluster, inputs: dict[str, Any], out: Path) -> dict[str, Any]:
    """What the KFP backend hands the component's executor (parameters, artifacts, output files)."""
    def artifact(a: Any, schema: str) -> dict[str, Any]:
        return {"artifacts": [{"name": a.name, "type": {"schemaTitle": schema}, "uri": a.uri, "metadata": {}}]}

    params = {"task": "222a", "step": 1, "method": "mib-cd", "options": {"trainer.epochs": 2},
              "launch_mode": cluster.backend.name, "workdir": str(inputs["workdir"]), "namespace": "cdseg",
              "run_id": RUN, "api_host": cluster.url, "image": "img:1", "timeout": 60}
    return {
        "inputs": {"parameterValues": params,
                   "artifacts": {"data": artifact(inputs["data"], "system.Dataset"),
                                 "prev_model": artifact(inputs["prev_model"], "system.Model")}},
        "outputs": {"artifacts": {"model": artifact(inputs["model"], "system.Model")},
                    "parameters": {"Output": {"outputFile": str(out / "output")}},
                    "outputFile": str(out / "executor_output.json")},
    }


@pytest.mark.parametrize("target", ["first-process", "process-tree"])
def test_sigterm_to_the_component_deletes_the_job(cluster: FakeCluster, inputs: dict[str, Any], tmp_path: Path,
                                                  target: str) -> None:
    """A cancelled KFP run: SIGTERM to the container's first process (what the kubelet signals; without the
    `exec` that is the `sh -ec` wrapper, which dies and orphans Python and the job) or to all its processes.
    The wrapper `exec`s Python, the launcher handles the signal and deletes the job; the step fails."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from components.train import train_step

    command = list(train_step.component_spec.implementation.container.command)
    assert command[:2] == ["sh", "-ec"] and "exec python3 -m kfp.dsl.executor_main" in command[2]
    name = job_name(RUN, 1)
    op = cluster.spawn(cluster.operator(name, ["Created", "Running"], log=b"epoch 1\n"))
    bin_dir = Path(sys.executable).parent  # `python3` in the command: this environment's
    assert (bin_dir / "python3").exists()
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")])}
    args = ["--executor_input", json.dumps(_executor_input(cluster, inputs, tmp_path)),
            "--function_to_execute", "train_step"]
    proc = subprocess.Popen([*command, *args], env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while cluster.job(name) is None or not cluster.logs.get(cluster.pod_name(name)):
            assert time.monotonic() < deadline and proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            time.sleep(0.1)
        time.sleep(1.0)  # the launcher is following the running job
        if target == "process-tree":
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            os.kill(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    op.result(10)
    text = out.decode(errors="replace")
    assert proc.returncode != 0, text
    assert "cancelled by signal SIGTERM" in text, text
    assert cluster.job(name) is None and cluster.left_behind() == [], "a cancelled step leaves no job behind"
