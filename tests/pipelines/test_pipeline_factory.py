"""The compiled pipeline's structure: the chain of steps, the previous-model edges, the parameters.

Compiled in memory for each shipped task (step counts from the dataset definitions), plus the step-0 import variant
and the compile-time options (retries, accelerator, PVC). Runtime behaviour is in test_pipeline_local.py.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from cdseg.data.source import DATASETS, definition_fields
from cdseg.tasks import get_task
from pipelines import SHIPPED_TASKS

#: the checked-in ISPRS tasks, and for every other dataset its first task of several steps
CASES = [*SHIPPED_TASKS, *((d, next(t for t, s in definition_fields(d)["tasks"].items() if len(s) > 1))
                           for d in DATASETS if d not in ("potsdam", "vaihingen"))]


def compile_docs(tmp_path: Path, task: str, dataset: str = "potsdam", num_steps: int | None = None,
                 **build: Any) -> list[dict[str, Any]]:
    from kfp import compiler

    from pipelines import BuildOptions, make_pipeline

    path = tmp_path / f"{dataset}-{task}.yaml"
    compiler.Compiler().compile(make_pipeline(task, options=BuildOptions(**build), dataset=dataset,
                                              num_steps=num_steps), str(path))
    return list(yaml.safe_load_all(path.read_text()))


def all_tasks(spec: dict[str, Any]) -> dict[str, Any]:
    """Every task of the pipeline: the root DAG's and those of its sub-DAGs (the exit handler's)."""
    out = dict(spec["root"]["dag"]["tasks"])
    for component in spec["components"].values():
        out.update((component.get("dag") or {}).get("tasks") or {})
    return out


def inside(name: str) -> dict[str, str]:
    """How a task inside the exit handler reads pipeline parameter `name` (through the sub-DAG's input)."""
    return {"componentInputParameter": f"pipelinechannel--{name}"}


def configured(key: str) -> dict[str, Any]:
    """How a task inside the exit handler reads a validated config option: an output of the configure task."""
    return {"taskOutputParameter": {"producerTask": "configure", "outputParameterKey": key}}


def tasks_by_step(spec: dict[str, Any], component: str) -> dict[int, tuple[str, dict[str, Any]]]:
    """{step: (task name, task)} of the tasks running `component` (train-step / evaluate)."""
    out = {}
    tasks = all_tasks(spec)
    for name, task in tasks.items():
        if task["componentRef"]["name"].removeprefix("comp-").rstrip("-0123456789") != component:
            continue
        if component == "train-step":
            step = int(task["inputs"]["parameters"]["step"]["runtimeValue"]["constant"])
        else:  # evaluate: the step of the model it evaluates
            producer = task["inputs"]["artifacts"]["model"]["taskOutputArtifact"]["producerTask"]
            step = int(tasks[producer]["inputs"]["parameters"]["step"]["runtimeValue"]["constant"]) \
                if producer.startswith("train-step") else 0
        out[step] = (name, task)
    return out


def producer(task: dict[str, Any], artifact: str) -> tuple[str, str]:
    ref = task["inputs"]["artifacts"][artifact]["taskOutputArtifact"]
    return ref["producerTask"], ref["outputArtifactKey"]


@pytest.mark.parametrize(("dataset", "task_name"), CASES)
def test_chain_of_steps(tmp_path: Path, dataset: str, task_name: str) -> None:
    spec = compile_docs(tmp_path, task_name, dataset)[0]
    n = get_task(task_name, definition_fields(dataset)).num_steps
    trains, evals = tasks_by_step(spec, "train-step"), tasks_by_step(spec, "evaluate")
    assert sorted(trains) == list(range(n)) and sorted(evals) == list(range(n))
    for k in range(n):
        name, train = trains[k]
        assert producer(train, "data") == ("prepare", "dataset")
        assert train["inputs"]["parameters"]["task"]["runtimeValue"]["constant"] == task_name
        if k == 0:
            assert "prev_model" not in train["inputs"].get("artifacts", {}), "step 0 starts from scratch"
        else:
            assert producer(train, "prev_model") == (trains[k - 1][0], "model"), f"step {k} must start from step {k - 1}"
        ev = evals[k][1]
        assert producer(ev, "model") == (name, "model")
        assert producer(ev, "data") == ("prepare", "dataset")
        if k:  # each evaluation adds its step to the previous one's history
            assert producer(ev, "earlier") == (evals[k - 1][0], "history")
        else:
            assert "earlier" not in ev["inputs"]["artifacts"]
    report = all_tasks(spec)["report"]
    assert producer(report, "history") == (evals[n - 1][0], "history")
    assert spec["pipelineInfo"]["name"] == f"cdseg-{task_name}"


#: the run form: the parameters people change, and `config` for the rest (components.run_config.RunConfig)
FORM = ["source", "method", "epochs", "batch_size", "lr", "train_options", "test_options", "image", "launch_mode",
        "nproc", "num_workers", "gpus_per_node", "accelerator_type", "accelerator_count", "workdir", "config"]


def test_parameters_and_defaults(tmp_path: Path) -> None:
    from components import DEFAULT_IMAGE, RECIPE_DEFAULT
    from pipelines.factory import HPARAMS

    spec = compile_docs(tmp_path, "222a")[0]
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert sorted(params) == sorted(FORM), "the form holds the often-changed parameters; the rest go in config"
    assert "defaultValue" not in params["source"], "the release has no sensible default: it is required"
    defaults = {k: v.get("defaultValue") for k, v in params.items()}
    assert defaults["method"] == "mib-cd"
    assert defaults["launch_mode"] == "auto", "a UI run trains as a cluster job; its train task only watches it"
    assert defaults["image"] == DEFAULT_IMAGE and defaults["config"] == {}
    assert (defaults["accelerator_type"], defaults["accelerator_count"]) == ("nvidia.com/gpu", 0)
    # the hyper-parameters default to "the recipe's": nothing the form does not show overrides a recipe
    assert {name: defaults[name] for name in HPARAMS} == {name: RECIPE_DEFAULT[path] for name, path in HPARAMS.items()}
    assert defaults["train_options"] == {} and defaults["test_options"] == {}
    assert "step0_model" not in params, "only the import_step0 variant takes a step-0 checkpoint"
    # every train task gets the run-time knobs from the pipeline parameters, not constants
    for _, train in tasks_by_step(spec, "train-step").values():
        p = train["inputs"]["parameters"]
        for name, param in [("method", "method"), ("launch_mode", "launch_mode"), ("image", "image"),
                            ("options", "train_options"), ("workdir", "workdir"), ("nproc_per_node", "nproc"),
                            ("gpus", "gpus_per_node"), ("num_workers", "num_workers")]:
            assert p[name] == inside(param)
        # the job options of config reach the train component's JobSpec-named parameters through configure
        for name, key in [("timeout", "job_timeout_s"), ("pending_timeout", "pending_timeout_s"),
                          ("namespace", "namespace"), ("cpu", "job_cpu"), ("memory", "job_memory"),
                          ("node_selector", "node_selector"), ("tolerations", "tolerations"), ("queue", "queue"),
                          ("priority_class", "priority_class")]:
            assert p[name] == configured(key), name
        assert p["run_id"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"


def test_the_recipes_values_reach_training_unless_the_form_sets_them() -> None:
    from components.train.run import TrainRequest, train_config

    unset = TrainRequest(task="222a", step=0, method="mib", hparams={
        "trainer.epochs": 0, "trainer.batch_size": 0, "optimizer.lr": 0.0, "trainer.patience": -1,
        "data.crop_size": 0, "in_channels": 0})
    assert unset.hparams == {}
    cfg = train_config(unset, "/data", None, "/out")
    assert (cfg.trainer.epochs, cfg.trainer.patience, cfg.in_channels) == (100, 25, 3)  # TrainConfig's
    typed = TrainRequest(task="222a", step=0, method="mib", hparams={"trainer.epochs": 3, "trainer.patience": 0})
    cfg = train_config(typed, "/data", None, "/out")
    assert (cfg.trainer.epochs, cfg.trainer.patience) == (3, 0)


def test_executors_install_nothing_and_each_task_has_its_resources(tmp_path: Path) -> None:
    spec = compile_docs(tmp_path, "222a")[0]
    param = "{{{{$.inputs.parameters['pipelinechannel--{}']}}}}".format

    def option(name: str) -> str:  # a validated config option: an output of the configure task
        return param(f"configure-{name}")

    for name, executor in spec["deploymentSpec"]["executors"].items():
        container = executor["container"]
        text = " ".join(container["command"])
        assert "pip install" not in text, f"{name} would pip-install at pod start"
        res = container["resources"]
        kind = name.removeprefix("exec-").rstrip("-0123456789")
        if kind == "train-step":
            assert container["image"] == option("train_task_image")
            assert res["resourceCpuRequest"] == res["resourceCpuLimit"] == option("train_task_cpu")
            assert res["resourceMemoryRequest"] == res["resourceMemoryLimit"] == option("train_task_memory")
            assert res["accelerator"] == {"resourceType": option("accelerator_type"),
                                          "resourceCount": option("accelerator_count")}
        elif kind in ("report", "configure", "cleanup"):
            # the exit task (cleanup) may depend on no task: the run's image, as configure, not a configured one
            assert container["image"] == param("image") and "accelerator" not in res
            assert (res["resourceCpuRequest"], res["resourceMemoryRequest"]) == \
                {"report": ("500m", "1Gi"), "cleanup": ("500m", "1Gi"), "configure": ("200m", "512Mi")}[kind]
        else:
            assert kind in ("prepare", "evaluate"), name
            assert container["image"] == param("image") and "accelerator" not in res
            assert res["resourceCpuRequest"] == res["resourceCpuLimit"] == option(f"{kind}_cpu")
            assert res["resourceMemoryRequest"] == res["resourceMemoryLimit"] == option(f"{kind}_memory")


def test_retries_and_kubernetes_settings(tmp_path: Path) -> None:
    docs = compile_docs(tmp_path, "222a", retries=2, pvc_name="cdseg-work")
    spec, platform = docs[0], docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name, task in all_tasks(spec).items():
        if name.startswith("exit-handler"):
            continue  # the sub-DAG itself; its tasks retry
        assert task["retryPolicy"]["maxRetryCount"] == 2, name
    trains = tasks_by_step(spec, "train-step")
    for name, _ in trains.values():
        k8s = platform[f"exec-{name}"]
        assert k8s["nodeSelector"] == {"nodeSelectorJson": configured("node_selector")}
        assert k8s["tolerations"] == [{"tolerationJson": configured("tolerations")}]
        assert k8s["pvcMount"][0]["mountPath"] == "/mnt/cdseg"
    assert platform["exec-prepare"]["pvcMount"][0]["constant"] == "cdseg-work"


def test_import_step0_variant(tmp_path: Path) -> None:
    spec = compile_docs(tmp_path, "222a", import_step0=True)[0]
    assert spec["root"]["inputDefinitions"]["parameters"]["step0_model"]["defaultValue"] == ""
    trains = tasks_by_step(spec, "train-step")
    assert sorted(trains) == [1, 2]
    tasks = all_tasks(spec)
    importers = [n for n, t in tasks.items() if "importer" in t["componentRef"]["name"]]
    assert len(importers) == 1
    assert producer(trains[1][1], "prev_model") == (importers[0], "artifact")


def test_build_options_match_the_cli_section() -> None:
    from cdseg.cli.pipeline import BuildSection
    from pipelines import BuildOptions

    cli = set(BuildSection.model_fields)
    factory = {f.name for f in dataclasses.fields(BuildOptions)}
    assert cli <= factory, "every CLI build option must reach the factory"
    assert factory - cli <= {"import_step0", "extra_labels"}, "a compile-time option is missing from the CLI"


def test_step_count_is_the_tasks_with_no_maximum(tmp_path: Path) -> None:
    from pipelines import make_pipeline

    with pytest.raises(ValueError, match="num_steps=0"):
        make_pipeline("222a", num_steps=0)
    spec = compile_docs(tmp_path, "222a", num_steps=8)[0]  # more steps than ISPRS has classes: fine
    assert sorted(tasks_by_step(spec, "evaluate")) == list(range(8))


def test_an_exit_handler_deletes_the_runs_jobs(tmp_path: Path) -> None:
    """Every task runs inside one dsl.ExitHandler whose exit task, `cleanup`, deletes the jobs still labelled with
    the run's id however the run ends (a launcher killed by SIGKILL cannot delete its own); never cached."""
    spec = compile_docs(tmp_path, "222a")[0]
    root = spec["root"]["dag"]["tasks"]
    assert set(root) == {"cleanup", "exit-handler-1"}, "nothing runs outside the handler"
    exit_task = root["cleanup"]
    assert exit_task["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    assert exit_task["dependentTasks"] == ["exit-handler-1"]
    params = exit_task["inputs"]["parameters"]
    assert params["run_id"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"
    assert params["launch_mode"] == {"componentInputParameter": "launch_mode"}
    # an exit task may depend on no task: the jobs' namespace is read from config itself, not configure's output
    assert params["config"] == {"componentInputParameter": "config"} and "namespace" not in params
    assert exit_task["cachingOptions"] == {}, "a cached 'nothing left' must not skip the deletion"
    inner = spec["components"]["comp-exit-handler-1"]["dag"]["tasks"]
    trains = [n for n in inner if n.startswith("train-step")]
    assert len(trains) == 3 and "report" in inner and "prepare" in inner
    assert "configure" in inner, "the config check runs inside the handler too"
    assert inner["prepare"].get("dependentTasks") == ["configure"], "nothing starts before the config is checked"
    for name in trains:  # the jobs carry the labels the exit task deletes by: the run's and the pipeline run's
        for param in ("run_id", "pipeline_run"):
            assert inner[name]["inputs"]["parameters"][param]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"
    assert "outputDefinitions" not in spec["root"], "no pipeline output (KFP takes none from inside a handler)"
