"""The PyTorchJob builder: CRD-valid, the operator's webhook rules, names, command, status reading."""

from __future__ import annotations

from typing import Any

import pytest

from cdseg.errors import ConfigError
from cdseg.launch import build_pytorchjob, job_name, job_state
from cdseg.launch.spec import MAX_JOB_NAME, label_value

from .jobspecs import BASE, VARIANTS


def test_container_details() -> None:
    spec = VARIANTS["gpus"]
    pod = build_pytorchjob(spec)["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["command"][:6] == ["python", "-m", "cdseg.train.torchrun", "-m", "cdseg", "train"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 8
    assert {"memory", "cpu"} <= set(c["resources"]["requests"]) and {"memory", "cpu"} <= set(c["resources"]["limits"])
    shm = next(v for v in pod["volumes"] if v["name"] == "shm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "32Gi"}
    assert {"name": "shm", "mountPath": "/dev/shm"} in c["volumeMounts"]
    assert not any(v["name"] == "cache" for v in pod["volumes"]), "a PVC at /cache replaces the emptyDir"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["metrics"] == 9400 and ports["metrics-7"] == 9407
    env = {e["name"]: e for e in c["env"]}
    assert env["NCCL_DEBUG"]["value"] == "INFO" and env["TORCH_NCCL_ASYNC_ERROR_HANDLING"]["value"] == "1"
    assert env["AWS_SECRET_ACCESS_KEY"] == {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {
        "secretKeyRef": {"name": "cdseg-s3", "key": "AWS_SECRET_ACCESS_KEY", "optional": True}}}
    assert all("value" not in e for name, e in env.items() if name.startswith("AWS_")), "credentials never literal"
    assert c["envFrom"] == [{"configMapRef": {"name": "cdseg-defaults", "optional": True}}]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"} and pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}] and pod["priorityClassName"] == "high"
    # torchrun takes nodes, rank and master from the operator's PET_* variables: nothing hard-coded
    assert not any(a.startswith(("--nnodes", "--node-rank", "--master")) for a in c["command"])
    cpu_env = {e["name"] for e in build_pytorchjob(BASE)["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
               ["containers"][0]["env"]}
    assert "NCCL_DEBUG" not in cpu_env


def test_labels_and_run_policy() -> None:
    job = build_pytorchjob(VARIANTS["gpus"])
    labels = job["metadata"]["labels"]
    assert labels["cdseg.io/run"] == "exp1" and labels["cdseg.io/step"] == "1" and labels["cdseg.io/task"] == "222a"
    assert labels["kueue.x-k8s.io/queue-name"] == "team-a"
    pod_labels = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["metadata"]["labels"]
    assert pod_labels["cdseg.io/metrics"] == "true" and pod_labels["cdseg.io/step"] == "1"
    policy = job["spec"]["runPolicy"]
    assert policy == {"cleanPodPolicy": "Running", "backoffLimit": 3, "activeDeadlineSeconds": 3600}
    assert build_pytorchjob(BASE)["spec"]["runPolicy"]["ttlSecondsAfterFinished"] == 86400


@pytest.mark.parametrize("backend", ["pytorchjob", "trainjob"])
def test_every_job_names_its_pipeline_run(backend: str) -> None:
    """Label cdseg.io/pipeline-run (what a pipeline's exit task deletes by) on the job, its pods and its ConfigMap:
    the pipeline run given, else the run itself (a `cdseg launch` job); its value made a valid label value, the
    unabridged name in an annotation."""
    import re

    from cdseg.launch import get_backend
    from cdseg.launch.trainconfig import config_map

    def pod_labels(job: dict[str, Any]) -> dict[str, str]:
        if job["kind"] == "PyTorchJob":
            return job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["metadata"]["labels"]
        patch = job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
        return patch["template"]["spec"]["template"]["metadata"]["labels"]

    kind = get_backend(backend)
    for spec, label, name in [
        (BASE, "exp1", "exp1"),  # no pipeline: the run's own id
        (BASE.replace(run="4f1d-222a-mib-s0", pipeline_run="4f1d"), "4f1d", "4f1d"),  # an experiment cell's
        (BASE.replace(pipeline_run="-my pipeline/run " + "x" * 70), "my-pipeline-run-" + "x" * 46,
         "-my pipeline/run " + "x" * 70),
    ]:
        job, cm = kind.build(spec), config_map(spec)
        for labels in (job["metadata"]["labels"], pod_labels(job), cm["metadata"]["labels"]):
            assert labels["cdseg.io/pipeline-run"] == label and labels["cdseg.io/run"] == label_value(spec.run)
        for meta in (job["metadata"], cm["metadata"]):
            assert meta["annotations"]["cdseg.io/pipeline-run-name"] == name
    assert re.fullmatch(r"[A-Za-z0-9][-A-Za-z0-9_.]*[A-Za-z0-9]", label) and len(label) <= 63
    with pytest.raises(ConfigError, match="pipeline_run='---' has no letter or digit"):
        BASE.replace(pipeline_run="---")


def test_the_pods_read_the_resolved_train_config_from_a_file() -> None:
    """No re-serialised options on the command line: `cdseg train --config <the ConfigMap's file>`; the file holds
    the TrainConfig the train arguments resolve to, with the task and step of the job."""
    cmd = BASE.train_command()
    assert cmd == ["python", "-m", "cdseg.train.torchrun", "-m", "cdseg", "train", "--config", "/etc/cdseg/train.yaml"]
    cfg = BASE.train_config
    assert cfg["task"]["name"] == "222a" and cfg["task"]["step"] == 1 and cfg["method"] == "mib-cd"
    assert cfg["data"]["dataset"] == "s3://b/prep" and cfg["output"] == "s3://b/runs/exp1"
    assert cfg["kd"]["weight"] == 10.0, "the method recipe's values are resolved into the file"
    explicit = BASE.replace(train_args=("--task.step", "1", "--task.name=222a", "--method", "ft"))
    assert explicit.train_config["method"] == "ft" and explicit.train_config["task"]["step"] == 1
    with pytest.raises(ConfigError, match="--task.step 2 disagrees with step=1"):
        BASE.replace(train_args=("--task.step", "2"))
    with pytest.raises(ConfigError, match="disagrees with task=222a"):
        BASE.replace(train_args=("--task.name", "6s"))
    with pytest.raises(ConfigError, match="'--no-such' is not an option of cdseg train"):
        BASE.replace(train_args=("--no-such", "1"))
    with pytest.raises(ConfigError, match="trainer.epochs"):
        BASE.replace(train_args=("--trainer.epochs", "many"))


@pytest.mark.parametrize("bad", [{"replicas": 0}, {"step": -1}, {"run": " "}, {"image": ""}, {"runtime": ""},
                                 {"gpus": 1, "nproc_per_node": 2}])
def test_bad_spec_is_a_config_error(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        BASE.replace(**bad)


@pytest.mark.parametrize("run", ["exp1", "A very long experiment name, with spaces/and slashes " * 3, "---", "Ünïcode"])
@pytest.mark.parametrize("step", [0, 7, 123])
def test_job_names_are_dns_safe_deterministic_and_short(run: str, step: int) -> None:
    import re

    name = job_name(run, step)
    assert name == job_name(run, step)
    assert len(name) <= MAX_JOB_NAME and len(name + "-worker-99") <= 63
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name)
    assert f"-s{step}-" in name
    assert re.fullmatch(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]?", label_value(run)) and len(label_value(run)) <= 63


def test_job_names_differ_per_run_and_step() -> None:
    names = {job_name(r, s) for r in ("a", "A", "a-", "b") for s in (0, 1)}
    assert len(names) == 8, "runs differing only in case or punctuation still get distinct names (hash)"


@pytest.mark.parametrize(("conditions", "phase"), [
    ([], "Pending"),
    ([{"type": "Created", "status": "True"}], "Created"),
    ([{"type": "Created", "status": "True"}, {"type": "Running", "status": "True"}], "Running"),
    # finished: Running stays in the list with status False, and need not be last
    ([{"type": "Created", "status": "True"}, {"type": "Succeeded", "status": "True"},
      {"type": "Running", "status": "False"}], "Succeeded"),
    ([{"type": "Running", "status": "False"}, {"type": "Failed", "status": "True", "reason": "OOM"}], "Failed"),
    ([{"type": "Created", "status": "True", "lastTransitionTime": "2026-01-01T00:00:02Z"},
      {"type": "Restarting", "status": "True", "lastTransitionTime": "2026-01-01T00:00:05Z"},
      {"type": "Running", "status": "False", "lastTransitionTime": "2026-01-01T00:00:09Z"}], "Restarting"),
])
def test_job_state(conditions: list[dict[str, str]], phase: str) -> None:
    assert job_state({"status": {"conditions": conditions}}).phase == phase


@pytest.mark.parametrize("method", ["mib-cd", "plop", "joint"])
def test_the_config_file_loads_back_to_the_same_config(tmp_path: Any, method: str) -> None:
    """What the pods do with the ConfigMap's file (`cdseg train --config`) gives the config the launcher resolved:
    nothing is lost or re-defaulted by the method recipe on the way."""
    from cdseg.config import load_config
    from cdseg.launch.trainconfig import config_map
    from cdseg.train.config import TrainConfig

    spec = BASE.replace(train_args=["--method", method, "--trainer.epochs", "3", "--no-model.pretrained",
                                    "--output", "s3://b/o"])
    path = tmp_path / "train.yaml"
    path.write_text(config_map(spec)["data"]["train.yaml"])
    loaded = load_config(TrainConfig, config_file=path, environ={})
    assert loaded.model_dump(mode="json") == spec.train_config
    assert (loaded.method, loaded.trainer.epochs, loaded.model.pretrained) == (method, 3, False)
