"""The pure-Python glue of the components: option passing through KFP, artifact locations, UI rendering.

KFP turns every number in a dict parameter into a float (protobuf Struct) and, locally, pipeline channels
inside a dict into text; the options must still reach the typed config as the right types.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kfp import dsl

from cdseg.train.config import TrainConfig
from components import artifacts
from components.evaluate import render
from components.report import render as report_render


def test_flatten_accepts_dotted_and_nested_options() -> None:
    assert artifacts.flatten_options({"trainer": {"epochs": 2.0}, "optimizer.lr": 0.5}) == {
        "trainer.epochs": 2, "optimizer.lr": 0.5}
    assert artifacts.flatten_options(None) == {}


@pytest.mark.parametrize(("value", "expected"), [(3.0, 3), ("3.0", 3), ("3", 3), (3, 3)])
def test_typed_options_restore_ints(value: Any, expected: int) -> None:
    assert artifacts.typed_options(TrainConfig, {"trainer.epochs": value}) == {"trainer.epochs": expected}


def test_typed_options_parse_text_booleans_and_lists_and_keep_unknown_keys() -> None:
    out = artifacts.typed_options(TrainConfig, {"trainer.amp": "false", "data.bands": "R,G,B", "nope.x": 1})
    assert out == {"trainer.amp": False, "data.bands": ["R", "G", "B"], "nope.x": 1}


def test_location_prefers_the_shared_uri(tmp_path: Path) -> None:
    out = dsl.Dataset(name="d", uri=str(tmp_path / "d"), metadata={})
    assert artifacts.location(out) == str(tmp_path / "d")
    artifacts.point_to(out, "s3://bucket/prepared")
    assert out.metadata["uri"] == "s3://bucket/prepared"
    # a consumer that gets the folder without the producer's metadata still finds it through the pointer file
    assert artifacts.location(dsl.Dataset(name="d", uri=str(tmp_path / "d"), metadata={})) == "s3://bucket/prepared"


def test_model_metadata_from_the_card() -> None:
    card = {"task": "6s", "step": 2, "method": "mib", "sha256": "f" * 64, "classes": [["a"], ["b"], ["c"]], "epoch": 7}
    meta = artifacts.model_metadata(card, "ignored")
    assert meta == {"task": "6s", "step": 2, "classes": [["a"], ["b"], ["c"]], "method": "mib", "checksum": "f" * 64,
                    "epoch": 7}


def metrics_json(step: int) -> dict[str, Any]:
    names = ["background", "building", "tree"]
    old, new = (["building"], ["tree"]) if step else ([], ["building", "tree"])
    mean = {"old": {"miou": 0.5 if old else None, "mf1": 0.6 if old else None, "classes": old},
            "new": {"miou": 0.25, "mf1": 0.3, "classes": new},
            "all": {"miou": 0.375, "mf1": 0.45, "classes": old + new}}
    return {"task": "6s", "step": step, "method": "mib", "mean": mean, "pixel_accuracy": 0.9,
            "per_class": {n: {"index": i} for i, n in enumerate(names)},
            "confusion_matrix": [[5, 1, 0], [0, 3, 1], [1, 0, 2]]}


class FakeMetrics:
    def __init__(self) -> None:
        self.values: dict[str, float] = {}
        self.metadata: dict[str, Any] = {}

    def log_metric(self, name: str, value: float) -> None:
        self.values[name] = value


def test_metrics_skip_the_old_group_at_step_0() -> None:
    m = FakeMetrics()
    render.log_metrics(metrics_json(0), m)
    assert "old_miou" not in m.values and m.values["new_miou"] == 25.0 and m.values["all_mf1"] == 45.0
    m = FakeMetrics()
    render.log_metrics(metrics_json(1), m)
    assert m.values["old_miou"] == 50.0
    assert render.summary(metrics_json(0)) == {"task": "6s", "step": 0, "method": "mib", "new_miou": 25.0,
                                               "all_miou": 37.5}


def test_confusion_matrix_with_class_names(tmp_path: Path) -> None:
    names, matrix = render.confusion_matrix(metrics_json(1), str(tmp_path))  # type: ignore[misc]
    assert names == ["background", "building", "tree"] and matrix[1] == [0, 3, 1]
    cm = dsl.ClassificationMetrics(name="c", uri=str(tmp_path / "c"), metadata={})
    cm.log_confusion_matrix(names, matrix)
    assert [s["displayName"] for s in cm.metadata["confusionMatrix"]["annotationSpecs"]] == names


def test_relabel_keeps_the_checkpoint_method(tmp_path: Path) -> None:
    result = metrics_json(0)
    (tmp_path / "metrics.json").write_text(json.dumps(result))
    render.relabel(result, "mib-cd", str(tmp_path))
    stored = json.loads((tmp_path / "metrics.json").read_text())
    assert stored["method"] == result["method"] == "mib-cd" and stored["checkpoint_method"] == "mib"


def test_report_page_inlines_relative_images(tmp_path: Path) -> None:
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "a.png").write_bytes(b"\x89PNG fake")
    page = report_render.inline_images('<img src="plots/a.png"><img src="https://x/y.png">', tmp_path)
    assert 'src="data:image/png;base64,' in page and 'src="https://x/y.png"' in page


def test_step_table() -> None:
    table = report_render.step_table([metrics_json(0), metrics_json(1)])
    assert "| mib | 0 | - | 25.00 | 37.50 |" in table and "| mib | 1 | 50.00 | 25.00 | 37.50 |" in table


@pytest.mark.parametrize(("method", "passed"), [("mib", True), ("ft", True), ("joint", False)])
def test_step_k_config_takes_the_previous_checkpoint_unless_joint(method: str, passed: bool) -> None:
    from components.train.run import TrainRequest, train_config

    req = TrainRequest(task="222a", step=1, method=method)
    cfg = train_config(req, "/data/prepared", "/work/step-0/model", "/work/out")
    # joint trains step 1 from scratch: the pipeline's edge from step 0 must not become --prev-checkpoint,
    # which joint refuses (the crash of `cdseg demo --compare ...,joint`)
    assert cfg.prev_checkpoint == ("/work/step-0/model" if passed else None)


def test_history_grows_one_step_per_evaluation(tmp_path) -> None:
    """Each evaluate task adds its step to the previous history: the report takes any number of steps."""
    import json

    from components.evaluate import render as eval_render

    earlier = None
    for step in range(12):
        results, history = tmp_path / f"results{step}", tmp_path / f"history{step}"
        results.mkdir()
        (results / "metrics.json").write_text(json.dumps(metrics_json(step)))
        eval_render.extend_history(earlier, str(results), str(history), {"step": step})
        earlier = str(history)
    steps = report_render.history_steps(earlier)
    assert [p.name for p in steps] == [f"step_{k}" for k in range(12)]  # numeric order: step_10 after step_9
    assert [json.loads((p / "metrics.json").read_text())["step"] for p in steps] == list(range(12))


def test_the_train_components_job_parameters_are_the_job_models() -> None:
    """One model describes a job: each job parameter of the train component is a `JobSpec` field (or a
    `LaunchConfig` option) of the same name and type, defaulting to the model's default (or to "": the model's);
    the rest are the step's own parameters."""
    import inspect
    import typing

    from cdseg.launch import JobSpec
    from cdseg.launch.config import LaunchConfig
    from components.train import train_step
    from components.train.run import TrainRequest

    step_own = {"task", "step", "method", "data", "model", "prev_model", "options", "hparams", "launch_mode",
                "workdir", "run_id", "api_host", "num_workers"}
    params = inspect.signature(train_step.python_func).parameters
    job_params = [n for n in params if n not in step_own]
    assert job_params, "the component has job parameters"
    for name in job_params:
        info = LaunchConfig.model_fields.get(name)
        assert info is not None, f"train_step parameter {name!r} is not a JobSpec / LaunchConfig field; rename it"
        default = params[name].default
        model_default = info.get_default(call_default_factory=True)
        if name in ("timeout", "pending_timeout"):  # the pipeline always sets a budget: no None
            assert isinstance(default, int) and default > 0
            continue
        assert default in ("", model_default, [], {}) or (name == "image" and default == ""), (name, default)
        base = typing.get_origin(info.annotation) or info.annotation
        assert isinstance(default, base if isinstance(base, type) else object), (name, default, info.annotation)
    # the settings the component passes to the model are exactly those parameters (by name)
    req = TrainRequest(task="222a", step=0, method="mib", job={n: params[n].default for n in job_params
                                                               if n in JobSpec.model_fields})
    assert set(req.job) <= set(JobSpec.model_fields)
    with pytest.raises(Exception, match="not JobSpec fields"):
        TrainRequest(task="222a", step=0, method="mib", job={"gpus_per_node": 1})
