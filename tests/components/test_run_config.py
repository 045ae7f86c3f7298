"""The pipelines' `config` parameter: its schema, the one-line errors, and the configure task that checks it first.

The configure component's body is called directly (KFP runs the same function in the run's first pod):
a bad key or value ends it with exit code 2 and one line naming the key and the fix.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from cdseg.errors import ConfigError
from components.run_config import (
    CONFIG_KEYS,
    OUTPUTS,
    RunConfig,
    accelerator_limit,
    check_run,
    parse_config,
    settings_of,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "pipelines.md"


def test_an_empty_config_gives_the_defaults() -> None:
    cfg = parse_config({})
    assert (cfg.prepare_cpu, cfg.train_task_cpu, cfg.train_task_memory, cfg.evaluate_memory) == ("4", "100m", "256Mi",
                                                                                                "16Gi")
    assert cfg.job_timeout_s == 86400 and cfg.keep_pushed_metrics is False and parse_config(None) == cfg


def test_kfp_floats_become_ints() -> None:
    # KFP's protobuf Struct turns every number of a dict parameter into a float
    assert parse_config({"job_timeout_s": 600.0, "pending_timeout_s": 60.0}).job_timeout_s == 600


@pytest.mark.parametrize(("config", "message"), [
    ({"prepare_cpus": "8"}, r"^config has an unknown key 'prepare_cpus'; did you mean 'prepare_cpu'\? known keys: "),
    ({"epochs": 3}, r"^config has an unknown key 'epochs'; known keys: prepare_options, "),
    ({"prepare_cpu": "4 cores"}, r"^config\['prepare_cpu'\]='4 cores': is not a Kubernetes CPU quantity; use e\.g\. "
                                 r"\"500m\" \(CPU request = limit of the prepare task\)$"),
    ({"evaluate_memory": "16GB"}, r"^config\['evaluate_memory'\]='16GB': is not a Kubernetes memory quantity"),
    ({"train_task_memory": ""}, r"^config\['train_task_memory'\]='': is not a Kubernetes memory quantity"),
    ({"train_task_image": " "}, r"^config\['train_task_image'\]=' ': is empty; give an image"),
    ({"job_timeout_s": 0}, r"^config\['job_timeout_s'\]=0: Input should be greater than or equal to 1"),
    ({"tolerations": [{"key": "gpu", "efect": "NoSchedule"}]},
     r"^config\['tolerations'\]=.*item 0 has unknown key\(s\) \['efect'\]; a toleration has "),
    ({"node_selector": ["pool=gpu"]}, r"^config\['node_selector'\]=\['pool=gpu'\]: Input should be a valid dictionary"),
])
def test_a_bad_key_or_value_is_one_line_naming_it(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_config(config)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("quantity", ["4", "500m", "0.5", "16Gi", "512Mi", "1e3", "2k"])
def test_kubernetes_quantities_pass(quantity: str) -> None:
    assert parse_config({"prepare_cpu": quantity, "prepare_memory": quantity, "job_cpu": quantity}).prepare_cpu == quantity


def test_job_resources_may_be_empty_the_tasks_may_not() -> None:
    assert parse_config({"job_cpu": "", "job_memory": ""}).job_cpu == ""
    with pytest.raises(ConfigError, match="prepare_cpu"):
        parse_config({"prepare_cpu": ""})


@pytest.mark.parametrize(("mode", "acc_type", "count", "message"), [
    ("kubeflow", "nvidia.com/gpu", 0, r"launch_mode='kubeflow' is not one of local, auto, trainjob, pytorchjob"),
    ("local", "nvidia.com/gpu", -1, r"accelerator_count=-1 must be >= 0"),
    ("local", "", 1, r"accelerator_count=1 needs accelerator_type, e\.g\. nvidia\.com/gpu"),
    ("auto", "nvidia.com/gpu", 1, r"applies to the train task's own pod \(launch_mode=local\), not to "
                                  r"launch_mode=auto: its jobs take gpus_per_node; set accelerator_count=0"),
])
def test_launch_mode_and_accelerators_are_checked(mode: str, acc_type: str, count: int, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_run(mode, acc_type, count)


def test_no_accelerator_limit_without_accelerators() -> None:
    # the KFP backend sets no accelerator limit when the resolved type is empty: a CPU run asks for none
    assert accelerator_limit("nvidia.com/gpu", 0) == ("", "")
    assert accelerator_limit("", 0) == ("", "")
    assert accelerator_limit(" nvidia.com/gpu ", 2) == ("nvidia.com/gpu", "2")
    out = settings_of({}, "local", "nvidia.com/gpu", 0)
    assert (out["accelerator_type"], out["accelerator_count"]) == ("", "")
    assert settings_of({}, "local", "amd.com/gpu", 1)["accelerator_count"] == "1"


def test_the_configure_component_outputs_every_option_in_order() -> None:
    from components.configure import configure

    outputs = configure.component_spec.outputs
    assert list(outputs) == list(OUTPUTS) == [*CONFIG_KEYS, "accelerator_type", "accelerator_count"]
    # strings: the backend reads a resource placeholder's string value (a number would resolve to "")
    for name in ("accelerator_type", "accelerator_count", "prepare_cpu", "train_task_image"):
        assert outputs[name].type == "String", name
    fields = RunConfig.model_fields
    for name in CONFIG_KEYS:
        kind = {"dict": "Dict", "list": "List", "bool": "Boolean", "int": "Integer", "str": "String"}[
            getattr(fields[name].annotation, "__origin__", fields[name].annotation).__name__]
        assert outputs[name].type == kind, name


def test_the_configure_task_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from components.configure import configure

    with pytest.raises(SystemExit) as info:
        configure.python_func(config={"queu": "gpu"}, launch_mode="auto", accelerator_type="", accelerator_count=0)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: config has an unknown key 'queu'; did you mean 'queue'?")
    out = configure.python_func(config={"queue": "gpu", "job_timeout_s": 60.0}, launch_mode="local",
                                accelerator_type="nvidia.com/gpu", accelerator_count=1)
    assert out._fields == OUTPUTS
    assert (out.queue, out.job_timeout_s, out.accelerator_type, out.accelerator_count) == ("gpu", 60, "nvidia.com/gpu",
                                                                                          "1")


def test_docs_list_every_config_key_with_its_default() -> None:
    text = DOCS.read_text()
    section = text[text.index("## The config parameter"):]
    section = section[:section.index("\n## ", 3)]
    rows = dict(re.findall(r"^\| `(\w+)` \| ([^|]+) \|", section, re.M))
    assert sorted(rows) == sorted(CONFIG_KEYS), "docs/pipelines.md's config table and RunConfig differ"
    for name, field in RunConfig.model_fields.items():
        default = field.get_default(call_default_factory=True)
        shown = rows[name].strip().strip("`")
        assert shown == (default if isinstance(default, str) and default else json.dumps(default)), name
