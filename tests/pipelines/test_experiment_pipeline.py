"""`cdseg experiment --compile-pipeline`: the grid as one Kubeflow pipeline.

Compiled in memory and read back: a ParallelFor over the seeds parameter per task and step-0 group, each
cell's steps chained, step 0 shared only by methods whose step 0 is identical, every cell's rows reaching
the report. The components' bodies are called directly on evaluation results and must give the report the
local runner gives; the pipeline run by KFP's local runner is the `slow` test at the end.
"""

from __future__ import annotations

import json
import re
import types
from pathlib import Path
from typing import Any

import pytest
import yaml

from cdseg.experiment.config import ExperimentConfig

pytestmark = pytest.mark.usefixtures("clean_env")

GRID: dict[str, Any] = {"dataset": "", "tasks": ["222a"], "methods": ["ft", "mib", "mib-cd"], "seeds": [0, 1]}


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from pipelines.experiment import compile_experiment

    path = tmp_path_factory.mktemp("exp") / "experiment.yaml"
    compile_experiment(ExperimentConfig.model_validate(GRID), str(path))
    return dict(next(yaml.safe_load_all(path.read_text())))


def component(task: dict[str, Any]) -> str:
    """`train-step`, `evaluate`, `experiment-cell`, `for-loop`, ... (the component a task runs)."""
    return re.sub(r"(-\d+)+$", "", task["componentRef"]["name"].removeprefix("comp-"))


def const(task: dict[str, Any], name: str) -> Any:
    return task["inputs"]["parameters"][name]["runtimeValue"]["constant"]


def producer(task: dict[str, Any], artifact: str) -> tuple[str, str]:
    ref = task["inputs"]["artifacts"][artifact]["taskOutputArtifact"]
    return ref["producerTask"], ref["outputArtifactKey"]


def handled(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The tasks inside the exit handler: every task but the exit task (cleanup) itself."""
    assert set(spec["root"]["dag"]["tasks"]) == {"cleanup", "exit-handler-1"}, "nothing runs outside the handler"
    return dict(spec["components"]["comp-exit-handler-1"]["dag"]["tasks"])


def loops(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Task name (inside the exit handler) -> the DAG of each ParallelFor."""
    return {name: spec["components"][t["componentRef"]["name"]]["dag"] for name, t in handled(spec).items()
            if component(t) == "for-loop"}


def trains(dag: dict[str, Any]) -> dict[tuple[str, int], str]:
    """(method, step) -> task name of the loop's train tasks."""
    return {(const(t, "method"), int(const(t, "step"))): n for n, t in dag["tasks"].items()
            if component(t) == "train-step"}


def test_a_parallel_for_over_the_seeds_parameter_per_step0_group(spec: dict[str, Any]) -> None:
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["seeds"]["parameterType"] == "LIST" and params["seeds"]["defaultValue"] == [0, 1]
    root = handled(spec)
    found = loops(spec)
    assert len(found) == 2, "ft and mib share a step 0, mib-cd has its own: two loops"
    for name in found:
        iterator = root[name]["parameterIterator"]
        assert iterator["items"] == {"inputParameter": "pipelinechannel--seeds"}
        assert producer(root[name], "pipelinechannel--prepare-dataset") == ("prepare", "dataset")
    groups = sorted(sorted({m for m, _ in trains(dag)}) for dag in found.values())
    assert groups == [["ft", "mib"], ["mib-cd"]]


def test_each_cell_chains_its_steps_from_its_groups_step0(spec: dict[str, Any]) -> None:
    seed = "{{$.inputs.parameters['pipelinechannel--seeds-loop-item']}}"
    for dag in loops(spec).values():
        tasks, by = dag["tasks"], trains(dag)
        step0 = [(m, n) for (m, k), n in by.items() if k == 0]
        assert len(step0) == 1, f"one step-0 model per group and seed, got {step0}"
        provider, step0_task = step0[0]
        members = sorted({m for m, k in by if k > 0})
        assert provider in members and sorted({m for m, _ in by}) == members
        for name, task in tasks.items():
            if component(task) == "train-step":
                assert const(task, "options")["seed"] == seed, f"{name} must train with the iteration's seed"
                assert task["inputs"]["parameters"]["hparams"] == {"componentInputParameter": "pipelinechannel--train_options"}
        for member in members:
            assert producer(tasks[by[(member, 1)]], "prev_model") == (step0_task, "model")
            assert producer(tasks[by[(member, 2)]], "prev_model") == (by[(member, 1)], "model")
        evaluated = {producer(t, "model")[0] for t in tasks.values() if component(t) == "evaluate"}
        assert evaluated == set(by.values()), "every trained model is evaluated once"


def test_every_cells_rows_reach_the_report(spec: dict[str, Any]) -> None:
    root = handled(spec)
    fed: dict[str, str] = {}  # loop -> the fan-in task consuming its rows
    for loop_name, dag in loops(spec).items():
        tasks = dag["tasks"]
        cells = {n: t for n, t in tasks.items() if component(t) == "experiment-cell"}
        by = trains(dag)
        step0 = next(n for (_, k), n in by.items() if k == 0)
        for cell in cells.values():
            name = const(cell, "name")
            evals = {producer(t, "model")[0]: n for n, t in tasks.items() if component(t) == "evaluate"}
            # the cell reads its last evaluation's history, which chains back through every step to step 0's
            assert producer(cell, "history") == (evals[by[(name, 2)]], "history")
            assert producer(tasks[evals[by[(name, 2)]]], "earlier") == (evals[by[(name, 1)]], "history")
            assert producer(tasks[evals[by[(name, 1)]]], "earlier") == (evals[step0], "history")
            assert "earlier" not in tasks[evals[step0]]["inputs"].get("artifacts", {})
            assert cell["inputs"]["parameters"]["seed"] == {"componentInputParameter": "pipelinechannel--seeds-loop-item"}
            # the id its evaluations pushed metrics under: the step-1 train's (cell-unique, with the seed)
            run_id = const(cell, "run_id")
            assert run_id == const(tasks[by[(name, 1)]], "run_id") and "seeds-loop-item" in run_id
        # the cells of an iteration are chained (earlier), and the last one is what the loop hands out
        chained = {producer(c, "earlier")[0] for c in cells.values() if "earlier" in c["inputs"].get("artifacts", {})}
        last = [n for n in cells if n not in chained]
        assert len(last) == 1 and len(chained) == len(cells) - 1
        selector = next(iter(dag["outputs"]["artifacts"].values()))["artifactSelectors"][0]
        assert selector == {"outputArtifactKey": "rows", "producerSubtask": last[0]}
        for name, task in root.items():
            for ref in task.get("inputs", {}).get("artifacts", {}).values():
                if ref.get("taskOutputArtifact", {}).get("producerTask") == loop_name:
                    fed[loop_name] = name
    assert set(fed) == set(loops(spec)), "every loop's rows are gathered"
    report = root["experiment-report"]
    gathers = [n for n, t in root.items() if component(t) == "experiment-gather"]
    assert sorted(fed.values()) == sorted(gathers + ["experiment-report"])
    assert producer(report, "earlier") == (gathers[0], "rows")
    assert const(report, "names") == GRID["methods"] and const(report, "tasks") == GRID["tasks"]


def test_an_exit_handler_deletes_every_cells_jobs(spec: dict[str, Any]) -> None:
    """As the task pipeline's (pipelines.factory.cleanup_exit_handler): every task inside one dsl.ExitHandler whose
    exit task, never cached, deletes the jobs labelled with the pipeline run's id however the run ends; every cell's
    train tasks label their jobs with it besides their cell-unique run id."""
    root = spec["root"]["dag"]["tasks"]
    inner = handled(spec)
    exit_task = root["cleanup"]
    assert exit_task["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    assert exit_task["dependentTasks"] == ["exit-handler-1"]
    assert exit_task["cachingOptions"] == {}, "a cached 'nothing left' must not skip the deletion"
    params = exit_task["inputs"]["parameters"]
    assert params["run_id"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"
    assert params["launch_mode"] == {"componentInputParameter": "launch_mode"}
    assert params["config"] == {"componentInputParameter": "config"} and "namespace" not in params
    assert {"configure", "prepare", "experiment-report"} <= set(inner), "configure, prepare and report inside too"
    train_tasks = [t for dag in loops(spec).values() for t in dag["tasks"].values() if component(t) == "train-step"]
    assert len(train_tasks) == 2 + 3 * 2, "a step 0 per step-0 group, then steps 1 and 2 of ft, mib and mib-cd"
    run_ids = set()
    for task in train_tasks:
        assert const(task, "pipeline_run") == "{{$.pipeline_job_uuid}}"
        run_id = const(task, "run_id")
        assert run_id.startswith("{{$.pipeline_job_uuid}}-222a-") and "seeds-loop-item" in run_id
        run_ids.add(run_id)
    assert len(run_ids) == 3, "one run id per cell (method x seed), shared by its steps"
    assert "outputDefinitions" not in spec["root"], "no pipeline output (KFP takes none from inside a handler)"


def test_every_task_input_is_one_its_dag_has(spec: dict[str, Any]) -> None:
    """kfp's compiler declares a loop item used in an f-string (the cells' run ids) an input of the exit handler's
    sub-DAG, which the root cannot give (kubeflow/pipelines issues 12390, 13273): the factory drops it, so every
    input a task takes from its DAG is one that DAG has, at every level."""
    dags = {"root": spec["root"], **{n: c for n, c in spec["components"].items() if "dag" in c}}
    for name, dag in dags.items():
        have = set(dag.get("inputDefinitions", {}).get("parameters", {}))
        for task_name, task in dag["dag"]["tasks"].items():
            for key, value in task.get("inputs", {}).get("parameters", {}).items():
                if "componentInputParameter" in value:
                    assert value["componentInputParameter"] in have, (name, task_name, key, value)
            if "parameterIterator" in task:
                assert task["parameterIterator"]["items"]["inputParameter"] in have, (name, task_name)
    handler = spec["components"]["comp-exit-handler-1"]["inputDefinitions"]["parameters"]
    assert not [k for k in handler if "loop-item" in k]


def test_dropping_leaked_loop_items_refuses_an_input_that_is_read() -> None:
    from kfp import dsl

    from components.cleanup import cleanup
    from pipelines.experiment import drop_leaked_loop_items

    def body(items: list = [1, 2]) -> None:  # noqa: B006
        with dsl.ExitHandler(cleanup(run_id="done")), dsl.ParallelFor(items) as item:
            cleanup(run_id=f"item-{item}")
            cleanup(run_id=item)  # (with the f-string alone, kfp would not pass the loop its items either)

    body.__annotations__ = {"items": list}  # real types, not this module's postponed strings
    leaky = dsl.pipeline(body)

    handler = leaky.pipeline_spec.components["comp-exit-handler-1"]
    assert "pipelinechannel--items-loop-item" in handler.input_definitions.parameters, "the kfp bug is still there"
    drop_leaked_loop_items(leaky)
    assert "pipelinechannel--items-loop-item" not in handler.input_definitions.parameters
    assert "pipelinechannel--items-loop-item" not in leaky.pipeline_spec.root.dag.tasks["exit-handler-1"].inputs.parameters
    # any other unbound input is not the known leak: refused
    leaky.pipeline_spec.root.dag.tasks["exit-handler-1"].inputs.parameters["pipelinechannel--gone"]\
        .component_input_parameter = "gone"
    with pytest.raises(RuntimeError, match="gone"):
        drop_leaked_loop_items(leaky)


def test_every_pipeline_parameter_has_a_description(spec: dict[str, Any]) -> None:
    params = spec["root"]["inputDefinitions"]["parameters"]
    missing = sorted(name for name, p in params.items() if len(p.get("description", "").strip()) < 10)
    assert not missing, f"experiment pipeline parameters without a description: {missing}"
    assert "defaultValue" not in params["source"]
    assert params["train_options"]["defaultValue"] == {} and params["test_options"]["defaultValue"] == {"split": "test"}
    # the form: what people change per run; the rest is config (checked by the configure task, first)
    assert sorted(params) == sorted(["source", "seeds", "train_options", "test_options", "image", "launch_mode", "nproc",
                                     "num_workers", "gpus_per_node", "accelerator_type", "accelerator_count", "workdir",
                                     "config"])
    assert "dependentTasks" not in handled(spec)["configure"]


def test_step0_groups_follow_the_step0_fingerprint() -> None:
    from pipelines.experiment import step0_groups

    cfg = ExperimentConfig.model_validate({**GRID, "tasks": ["222a", "321"],
                                           "methods": ["ft", "uft", "mib", "mib-cd", "ft-cd", "mib-cd+fd"],
                                           "variants": {"mib-cd+fd": {"model.feature_dropout": True}}})
    got = [(g.task, g.provider, g.members) for g in step0_groups(cfg)]
    assert got == [(t, p, m) for t in ("222a", "321") for p, m in
                   [("ft", ("ft", "uft", "mib")), ("mib-cd", ("mib-cd", "ft-cd")), ("mib-cd+fd", ("mib-cd+fd",))]]


def test_cli_compiles_and_refuses_a_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cdseg.cli.main import main

    out = tmp_path / "exp.yaml"
    args = ["experiment", "--compile-pipeline", str(out), "--tasks", "222a", "--methods", "ft,mib", "--seeds", "0,1,2",
            "--steps", "2", "--parallelism", "2", "--build.retries", "0"]
    assert main(args) == 0
    spec = next(yaml.safe_load_all(out.read_text()))
    (loop,) = (t for t in handled(spec).values() if "parameterIterator" in t)
    assert loop["iteratorPolicy"] == {"parallelismLimit": 2}
    assert spec["root"]["inputDefinitions"]["parameters"]["seeds"]["defaultValue"] == [0, 1, 2]
    assert "222a: ft, mib (step 0 of ft, shared)" in capsys.readouterr().err
    assert main([*args[:3], "--dataset", "data/prepared"]) == 2
    assert "--dataset is not used with --compile-pipeline" in capsys.readouterr().err
    assert main(["experiment", "--tasks", "222a"]) == 2
    assert "--dataset is required" in capsys.readouterr().err


def _metrics(task: str, step: int, old: list[str], new: list[str], base: float) -> dict[str, Any]:
    """The part of `cdseg test`'s metrics.json the report reads."""
    iou = {c: round(base + 0.01 * i, 4) for i, c in enumerate(old + new)}
    mean = {g: (sum(iou[c] for c in cs) / len(cs) if cs else None) for g, cs in (("old", old), ("new", new))}
    return {"task": task, "step": step, "old_classes": old, "new_classes": new,
            "mean": {"old": {"miou": mean["old"]}, "new": {"miou": mean["new"]}, "all": {"miou": sum(iou.values()) / len(iou)}},
            "per_class": {**{c: {"iou": iou[c], "group": "old" if c in old else "new"} for c in old + new},
                          "background": {"iou": 0.9, "group": "background"}}}


def test_components_write_the_local_runners_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Evaluations laid out as the local runner's run folders and handed to the components give the same report."""
    import cdseg.experiment.grid as grid
    from cdseg.experiment.grid import Cell, cells, collect, metrics_uri, step0_providers
    from cdseg.experiment.report import write_report
    from components.experiment.component import experiment_cell, experiment_gather, experiment_report

    cfg = ExperimentConfig.model_validate({**GRID, "dataset": str(tmp_path / "data"), "output": str(tmp_path / "exp"),
                                           "steps": 2})
    monkeypatch.setattr(grid, "num_steps", lambda cfg, task: 2)  # no prepared dataset here: the step count is --steps
    providers = step0_providers(cfg)
    classes = [["a", "b"], ["c"]]
    for i, cell in enumerate(cells(cfg)):
        for step in (0, 1):
            if step == 0 and providers[cell] != cell:
                continue
            m = _metrics("222a", step, classes[0] if step else [], classes[step], 0.3 + 0.05 * i + 0.1 * step)
            path = Path(metrics_uri(cfg, cell, step))
            path.parent.mkdir(parents=True)
            path.write_text(json.dumps(m))
    expected = tmp_path / "local"
    write_report(collect(cfg), cfg.methods, cfg.confidence, expected, "cdseg experiment ...")

    def art(path: Path) -> Any:
        return types.SimpleNamespace(path=str(path), metadata={})

    def history(cell: Cell) -> Any:
        """What the cell's last evaluate task hands on: step_<k>/metrics.json of every step (as extend_history)."""
        folder = tmp_path / "history" / f"{cell.name}-{cell.seed}"
        for step in (0, 1):
            (folder / f"step_{step}").mkdir(parents=True)
            source = Path(metrics_uri(cfg, providers[cell] if step == 0 else cell, step))
            (folder / f"step_{step}" / "metrics.json").write_bytes(source.read_bytes())
        return art(folder)

    groups = {("ft", "mib"): "ft", ("mib-cd",): "mib-cd"}
    loop_rows: list[list[Any]] = []
    for n, (members, provider) in enumerate(groups.items()):
        iterations = []
        for seed in cfg.seeds:
            rows = None
            for name in members:
                out = art(tmp_path / f"cell-{n}-{seed}-{name}")
                cell = Cell("222a", name, seed)
                experiment_cell.python_func(task="222a", name=name, seed=seed, step0_from=provider, rows=out,
                                            history=history(cell), earlier=rows,
                                            run_id=f"run-{name}-s{seed}")
                rows = out
            iterations.append(rows)
        loop_rows.append(iterations)
    gathered = art(tmp_path / "gathered")
    assert experiment_gather.python_func(cells=loop_rows[0], rows=gathered) == 8
    report_dir, summary = art(tmp_path / "report"), art(tmp_path / "summary.md")
    deleted: list[str] = []
    monkeypatch.setattr("cdseg.evaluate.run.delete_pushed", deleted.append)
    n = experiment_report.python_func(cells=loop_rows[1], report_dir=report_dir, summary=summary, tasks=["222a"],
                                      names=cfg.methods, confidence=cfg.confidence, command="cdseg experiment ...",
                                      earlier=gathered)
    assert n == 12
    assert (tmp_path / "report" / "report.md").read_text() == (expected / "report.md").read_text()
    assert json.loads((tmp_path / "report" / "results.json").read_text()) == json.loads((expected / "results.json").read_text())
    assert "mib uses ft's" in (tmp_path / "summary.md").read_text()
    assert report_dir.metadata["rows"] == 12
    # every cell's pushed evaluation metrics are deleted once the report is written
    assert deleted == sorted(f"run-{n}-s{s}" for n in cfg.methods for s in cfg.seeds)

    # a seed given twice in the run's seeds parameter is refused, not averaged twice
    from cdseg.errors import ConfigError

    with pytest.raises(ConfigError, match="seed 0 of 222a/ft ran twice"):
        experiment_gather.python_func(cells=[loop_rows[0][0], loop_rows[0][0]], rows=art(tmp_path / "twice"))


@pytest.mark.slow
def test_kfp_local_runner_runs_the_grid(synth_release: Path, tmp_path: Path) -> None:
    """The pipeline run for real by KFP's local runner (ParallelFor and dsl.Collected included): task 222a cut to
    2 steps, ft and mib (one shared step 0) and mib-cd, the seeds given at run time (a few minutes on 2 cores)."""
    from kfp import local

    from pipelines.experiment import make_experiment_pipeline
    from pipelines.factory import BuildOptions
    from pipelines.local import find_report

    train = {"model.encoder": "resnet10t", "model.pretrained": False, "model.norm": "bn", "trainer.epochs": 1,
             "trainer.batch_size": 2, "data.crop_size": 64, "trainer.limit_batches": 1,
             "trainer.limit_val_batches": 1, "data.workers": 0}
    cfg = ExperimentConfig.model_validate({**GRID, "steps": 2, "train_options": train})
    pipeline = make_experiment_pipeline(cfg, options=BuildOptions(retries=0))
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"),
               enable_caching=False, raise_on_error=True)
    pipeline(source=str(synth_release), seeds=[3, 4], launch_mode="local",
             config={"prepare_options": {"patch_size": 128, "overlap": 0, "val_count": 1}},
             test_options={"eval.window": 128, "eval.overlap": 0, "eval.previews": 0, "scenes": ["2_13"]})
    # no pipeline output (every task is inside the exit handler): the report task's artifact in the run's folder
    (run_dir,) = (tmp_path / "root").iterdir()
    report = find_report(run_dir, holding="results.json")
    assert report is not None, f"no experiment report under {run_dir}"
    rows = json.loads((report / "results.json").read_text())
    assert sorted((r["name"], r["seed"], r["step"]) for r in rows) == sorted(
        (n, s, k) for n in GRID["methods"] for s in (3, 4) for k in (0, 1))
    assert {(r["name"], r["step0_from"]) for r in rows if r["step"] == 0} == {("ft", "ft"), ("mib", "ft"),
                                                                               ("mib-cd", "mib-cd")}
    text = (report / "report.md").read_text()
    assert "mib uses ft's" in text and "| 1 | ft - mib | all | 2 |" in text
    assert (report / "miou.png").is_file()


def test_cli_compiles_the_tasks_of_another_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cdseg.cli.main import main

    out = tmp_path / "exp.yaml"
    base = ["experiment", "--compile-pipeline", str(out), "--methods", "ft", "--seeds", "0", "--build.retries", "0"]
    assert main([*base, "--tasks", "4-1", "--dataset-name", "loveda"]) == 0  # LoveDA's 4-1: 4 steps
    text = out.read_text()
    assert all(f"train 4-1 ft step {k}" in text for k in range(4)) and "step 4" not in text
    assert "4-1: ft" in capsys.readouterr().err
    assert main([*base, "--tasks", "4-1"]) == 2  # not an ISPRS task
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert main(["experiment", "--dataset", "data/prepared", "--dataset-name", "loveda"]) == 2
    assert "go with --compile-pipeline" in capsys.readouterr().err
