"""The run form and its `config` parameter in the compiled pipelines: the configure task runs first, every
option reaches its task or pod setting from it, and CPU runs set no accelerator limit.

What the KFP backend does with the compiled YAML (resolving a pod's resources, image, node selector and
tolerations from a task output) was read in the backend's driver source, not run on a cluster
(docs/kubernetes.md, Minimum versions).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

from cdseg.errors import ConfigError
from pipelines import SHIPPED_TASKS
from pipelines.compile import COMPILED_DIR, compiled_name

#: parameters of the form before the config parameter (0.1.0): what the form lost
FORMER_FORM = 37


def compiled(task: str) -> list[dict[str, Any]]:
    return list(yaml.safe_load_all((COMPILED_DIR / compiled_name(task)).read_text()))


def handled(spec: dict[str, Any]) -> dict[str, Any]:
    """The tasks inside the exit handler: every task but the exit task (cleanup) itself."""
    root = spec["root"]["dag"]["tasks"]
    assert set(root) == {"cleanup", "exit-handler-1"}, "nothing runs outside the exit handler"
    return dict(spec["components"]["comp-exit-handler-1"]["dag"]["tasks"])


def upstream(tasks: dict[str, Any], name: str) -> set[str]:
    """Every task `name` waits for, transitively."""
    seen: set[str] = set()
    todo = list(tasks[name].get("dependentTasks", []))
    while todo:
        dep = todo.pop()
        if dep not in seen:
            seen.add(dep)
            todo += tasks[dep].get("dependentTasks", [])
    return seen


@pytest.mark.parametrize(("dataset", "task"), SHIPPED_TASKS)
def test_the_form_is_small_and_configure_runs_first(dataset: str, task: str) -> None:
    spec = compiled(task)[0]
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert len(params) == 16 < FORMER_FORM
    assert params["config"]["parameterType"] == "STRUCT" and params["config"]["defaultValue"] == {}
    tasks = handled(spec)
    assert "dependentTasks" not in tasks["configure"], "nothing runs before the config is checked"
    assert tasks["configure"]["inputs"]["parameters"]["config"] == {"componentInputParameter": "pipelinechannel--config"}
    # the exit task reads config itself (an exit task may depend on no task), and runs after the handler's tasks
    exit_task = spec["root"]["dag"]["tasks"]["cleanup"]
    assert exit_task["inputs"]["parameters"]["config"] == {"componentInputParameter": "config"}
    assert exit_task["dependentTasks"] == ["exit-handler-1"]
    for name in tasks:
        if name != "configure":
            assert "configure" in upstream(tasks, name), f"{name} may start before config is validated"


def test_train_tasks_take_accelerators_as_strings_from_configure() -> None:
    docs = compiled("6s")
    spec = docs[0]
    executors = spec["deploymentSpec"]["executors"]
    configure = spec["components"]["comp-configure"]["outputDefinitions"]["parameters"]
    assert configure["accelerator_type"]["parameterType"] == configure["accelerator_count"]["parameterType"] == "STRING"
    trains = {n: t for n, t in handled(spec).items() if n.startswith("train-step")}
    assert len(trains) == 6
    for name, task in trains.items():
        inputs = task["inputs"]["parameters"]
        for key in ("accelerator_type", "accelerator_count"):
            assert inputs[f"pipelinechannel--configure-{key}"] == {
                "taskOutputParameter": {"outputParameterKey": key, "producerTask": "configure"}}, name
        executor = executors[spec["components"][task["componentRef"]["name"]]["executorLabel"]]
        assert executor["container"]["resources"]["accelerator"] == {
            "resourceType": "{{$.inputs.parameters['pipelinechannel--configure-accelerator_type']}}",
            "resourceCount": "{{$.inputs.parameters['pipelinechannel--configure-accelerator_count']}}"}
    # no other task asks for an accelerator, and the form's int never reaches a resource directly
    text = (COMPILED_DIR / "6s.yaml").read_text()
    assert "pipelinechannel--accelerator_count']" not in text


def test_old_parameter_names_move_to_config_and_train_options(caplog: pytest.LogCaptureFixture) -> None:
    from pipelines.params import migrate_arguments

    with caplog.at_level(logging.WARNING, logger="cdseg.pipelines"):
        args = migrate_arguments({"source": "s", "epochs": 2, "prepare_cpu": "8", "keep_pushed_metrics": True,
                                  "crop_size": 256, "patience": -1, "in_channels": 4,
                                  "train_options": {"in_channels": 3}, "config": {"queue": "q"}})
    assert args == {"source": "s", "epochs": 2, "train_options": {"in_channels": 3, "data.crop_size": 256},
                    "config": {"queue": "q", "prepare_cpu": "8", "keep_pushed_metrics": True}}
    assert "parameter 'prepare_cpu' is now config['prepare_cpu']" in caplog.text
    assert "parameter 'crop_size' is now train_options['data.crop_size']" in caplog.text
    assert migrate_arguments({"source": "s"}) == {"source": "s"}
    with pytest.raises(ConfigError, match=r"'queue' is given both as a parameter and in config"):
        migrate_arguments({"queue": "a", "config": {"queue": "b"}})
    with pytest.raises(ConfigError, match=r"^config\['prepare_cpu'\]='lots'"):
        migrate_arguments({"prepare_cpu": "lots"})


def test_the_cli_validates_config_before_submitting(tmp_path: Path) -> None:
    from cdseg.cli.pipeline import SubmitConfig

    cfg = SubmitConfig.model_validate({"host": "http://kfp", "source": "s3://b/r", "dataset_def": "my.yaml",
                                       "params": {"prepare_memory": "32Gi"}})
    assert cfg.arguments()["config"] == {"prepare_memory": "32Gi", "prepare_options": {"dataset_def": "my.yaml"}}
    bad = SubmitConfig.model_validate({"host": "http://kfp", "source": "s3://b/r",
                                       "params": {"config": {"nodeselector": {}}}})
    with pytest.raises(ConfigError, match="did you mean 'node_selector'"):
        bad.arguments()


def test_run_local_refuses_a_bad_config_before_writing_anything(tmp_path: Path) -> None:
    from pipelines.local import run_local

    with pytest.raises(ConfigError, match=r"^config\['evaluate_cpu'\]='x': is not a Kubernetes CPU quantity"):
        run_local("offline", arguments={"source": str(tmp_path), "config": {"evaluate_cpu": "x"}},
                  output=tmp_path / "run", caching=False)
    assert not (tmp_path / "run").exists()


def test_the_pipeline_stops_at_configure_on_a_bad_config(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """The compiled pipeline itself, run by KFP's local runner, as the KFP UI would submit it: the first task
    fails with the one line, and nothing else starts."""
    from kfp import local

    from pipelines.factory import BuildOptions, make_pipeline

    pipeline = make_pipeline("offline", options=BuildOptions(retries=0))
    root = tmp_path / "root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), enable_caching=False,
               raise_on_error=True)
    with pytest.raises(RuntimeError, match="configure"):
        pipeline(source=str(tmp_path / "none"), launch_mode="local", config={"tolerations": [{"efect": "NoSchedule"}]})
    out = capfd.readouterr()
    assert "error: config['tolerations']=[{'efect': 'NoSchedule'}]: item 0 has unknown key(s) ['efect']" in \
        out.out + out.err
    assert not list(root.glob("*/prepare")), "prepare ran although the config is bad"
