"""The whole pipeline, run for real by KFP's local runner on a tiny generated release.

Task 222a cut to its first two steps (prepare -> train(0) -> evaluate(0) -> train(1, prev = train(0))
-> evaluate(1) -> report), a few iterations per step: every component runs in its own subprocess,
artifacts travel between them as in a cluster, and the UI artifacts are filled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

#: a few iterations per step: seconds of compute per task (most of a task's time is its Python start-up)
TINY: dict[str, Any] = {
    "epochs": 1, "batch_size": 2,
    "config": {"prepare_options": {"patch_size": 128, "overlap": 0, "val_count": 1}},
    "train_options": {"model.encoder": "resnet10t", "model.pretrained": False, "model.norm": "bn", "data.crop_size": 64,
                      "trainer.limit_batches": 1, "trainer.limit_val_batches": 1, "data.workers": 0},
    "test_options": {"eval.window": 128, "eval.overlap": 0, "eval.previews": 1, "scenes": ["2_13"]},
}


@pytest.fixture(scope="module")
def local_run(synth_release: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from pipelines.local import run_local

    events: list[str] = []
    run = run_local("222a", arguments={"source": str(synth_release), "method": "mib-cd", **TINY}, num_steps=2,
                    output=tmp_path_factory.mktemp("pipeline"), caching=False, progress=events.append)
    run.events = events  # type: ignore[attr-defined]
    return run


def executor_output(run: Any, task: str) -> dict[str, Any]:
    return json.loads((run.run_dir / task / "executor_output.json").read_text())


def test_every_step_is_evaluated_and_reported(local_run: Any) -> None:
    steps = [m["step"] for m in local_run.metrics]
    assert steps == [0, 1]
    step0, step1 = local_run.metrics
    assert step0["mean"]["old"]["classes"] == [] and step0["mean"]["new"]["classes"], "222a step 0: new classes only"
    assert step1["mean"]["old"]["classes"] == step0["mean"]["new"]["classes"], "step 1's old = step 0's classes"
    assert all(m["method"] == "mib-cd" and m["task"] == "222a" for m in local_run.metrics)
    assert (local_run.report_dir / "report.html").is_file() and (local_run.report_dir / "report.md").is_file()
    started = [e.removeprefix("start ") for e in local_run.events if e.startswith("start ")]
    assert sorted(started) == sorted(["configure", "prepare", "train step 0", "evaluate step 0", "train step 1",
                                      "evaluate step 1", "report", "clean up jobs"])
    order = started.index  # independent tasks (evaluate 0, train 1) may run in either order; the edges may not
    assert started[:2] == ["configure", "prepare"], "the config is checked first"
    # the exit handler's task runs last (locally a no-op: launch_mode=local made no job)
    assert started[-2:] == ["report", "clean up jobs"]
    assert order("train step 0") < order("train step 1") and order("train step 0") < order("evaluate step 0")
    assert order("train step 1") < order("evaluate step 1")


def test_step1_trains_from_step0(local_run: Any) -> None:
    card0 = json.loads((local_run.run_dir / "train-step" / "model" / "model.json").read_text())
    card1 = json.loads((local_run.run_dir / "train-step-2" / "model" / "model.json").read_text())
    assert (card0["step"], card1["step"]) == (0, 1)
    meta = executor_output(local_run, "train-step-2")["artifacts"]["model"]["artifacts"][0]["metadata"]
    assert meta["task"] == "222a" and meta["step"] == 1 and meta["method"] == "mib-cd"
    assert len(meta["checksum"]) == 64


def test_evaluation_fills_the_ui_artifacts(local_run: Any) -> None:
    out = executor_output(local_run, "evaluate-2")["artifacts"]
    metrics = out["metrics"]["artifacts"][0]["metadata"]
    assert {"old_miou", "new_miou", "all_miou", "old_mf1", "new_mf1", "all_mf1"} <= set(metrics)
    assert all(0.0 <= metrics[k] <= 100.0 for k in ("old_miou", "new_miou", "all_miou"))
    cm = out["confusion"]["artifacts"][0]["metadata"]["confusionMatrix"]
    names = [a["displayName"] for a in cm["annotationSpecs"]]
    assert names[0] == "background" and len(names) == len(cm["rows"]) == 1 + len(local_run.metrics[1]["mean"]["all"]["classes"])
    per_class = Path(out["per_class"]["artifacts"][0]["uri"]).read_text()
    assert "| # | class |" in per_class
    samples = Path(out["samples"]["artifacts"][0]["uri"]).read_text()
    assert "data:image/png;base64," in samples


def test_report_component_keeps_the_metrics_and_a_standalone_page(local_run: Any) -> None:
    page = Path(executor_output(local_run, "report")["artifacts"]["report_html"]["artifacts"][0]["uri"]).read_text()
    assert "<img" in page and "src=\"plots/" not in page and "src='plots/" not in page


@pytest.mark.slow
def test_step0_model_shared_with_another_method(local_run: Any, synth_release: Path,
                                                tmp_path_factory: pytest.TempPathFactory) -> None:
    """The pipeline compiled with import_step0 (cdseg demo --compare): step 1 of `mib` from mib-cd's step 0."""
    from pipelines import BuildOptions
    from pipelines.local import run_local

    step0 = local_run.run_dir / "train-step" / "model"
    run = run_local("222a", arguments={"source": str(synth_release), "method": "mib", "step0_model": str(step0), **TINY},
                    num_steps=2, output=tmp_path_factory.mktemp("shared"), caching=False,
                    build=BuildOptions(retries=0, import_step0=True))
    assert [m["step"] for m in run.metrics] == [0, 1]
    assert all(m["method"] == "mib" for m in run.metrics), "evaluations carry the run's method"
    assert run.metrics[0]["checkpoint_method"] == "mib-cd", "the shared checkpoint keeps its origin"
    assert not (run.run_dir / "train-step-2").exists(), "only step 1 is trained"
    card1 = json.loads((run.run_dir / "train-step" / "model" / "model.json").read_text())
    assert card1["step"] == 1


@pytest.mark.slow
def test_cli_run_local_with_torchrun(synth_release: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`cdseg pipeline run --local` on the 1-step offline task, the train step under torchrun with 2 processes."""
    from cdseg.cli.main import main

    params = {**TINY, "nproc": 2}
    rc = main(["pipeline", "run", "--local", "--task", "offline", "--source", str(synth_release), "--method", "ft",
               "--output", str(tmp_path), "--no-caching", "--params", json.dumps(params)])
    assert rc == 0
    out = capsys.readouterr()
    assert "report:" in out.out and "ft " in out.out
    log = (tmp_path / "pipeline.log").read_text()
    assert "--nproc-per-node=2" in log and "on cpu x2" in log
