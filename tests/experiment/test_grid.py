"""`cdseg experiment` end to end on tiny data: a 2 methods x 2 seeds x 2 steps grid, shared step 0, the report,
and a rerun of the finished grid that trains nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from train._util import TINY

from cdseg.cli.main import main
from cdseg.evaluate import run_test
from cdseg.experiment.config import ExperimentConfig
from cdseg.experiment.grid import Cell, step0_providers

#: the trainer tests' tiny run, without what the experiment sets per run
TRAIN = {k: v for k, v in TINY.items() if k != "task.name"}


pytestmark = pytest.mark.usefixtures("clean_env")


def _cfg(dataset: Path, out: Path, **over: Any) -> ExperimentConfig:
    return ExperimentConfig.model_validate({
        "dataset": str(dataset), "output": str(out), "tasks": ["222a"], "methods": ["ft", "mib"], "seeds": [0, 1],
        "steps": 2, "train_options": TRAIN,
        "eval": {"window": 64, "overlap": 16, "previews": 0, "geotiff": False}, **over})


def _args(dataset: Path, out: Path) -> list[str]:
    return ["experiment", "--dataset", str(dataset), "--output", str(out), "--tasks", "222a", "--methods", "ft,mib",
            "--seeds", "0,1", "--steps", "2", "--train-options", json.dumps(TRAIN), "--eval.window", "64",
            "--eval.overlap", "16", "--eval.previews", "0", "--no-eval.geotiff"]


def test_small_grid_runs_reports_and_a_rerun_trains_nothing(prepared_dataset: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "exp"
    assert main(_args(prepared_dataset, out)) == 0
    # ft and mib train step 0 identically: one step-0 model per seed (ft's), then each its own step 1
    assert "steps: 6 in the grid, 6 run now, 0 done already" in capsys.readouterr().out
    runs = out / "runs" / "222a"
    for seed in (0, 1):
        assert (runs / "ft" / f"seed-{seed}" / "step-0" / "model" / "model.json").is_file()
        assert not (runs / "mib" / f"seed-{seed}" / "step-0").exists()
        for name in ("ft", "mib"):
            card = json.loads((runs / name / f"seed-{seed}" / "step-1" / "model" / "model.json").read_text())
            assert card["step"] == 1 and card["method"] == name
    results = json.loads((out / "report" / "results.json").read_text())
    assert sorted((r["name"], r["seed"], r["step"]) for r in results) == sorted(
        (n, s, k) for n in ("ft", "mib") for s in (0, 1) for k in (0, 1))
    assert {r["step0_from"] for r in results if r["step"] == 0} == {"ft"}
    report = (out / "report" / "report.md").read_text()
    assert "| 1 | mib | 2 |" in report and "mib uses ft's" in report
    assert "| 1 | ft - mib | all | 2 |" in report and "sign test" in report
    assert (out / "report" / "miou.png").stat().st_size > 1000

    # a finished grid: nothing is trained or tested again, the report is rewritten from the runs
    def boom(*_: Any, **__: Any) -> None:
        raise AssertionError("a finished step was trained again")

    monkeypatch.setattr("cdseg.train.run_train", boom)
    monkeypatch.setattr("cdseg.evaluate.run_test", boom)
    assert main(_args(prepared_dataset, out)) == 0
    assert "steps: 6 in the grid, 0 run now, 6 done already" in capsys.readouterr().out
    # and with worker processes (where the patches above do not reach: the counts are theirs)
    assert main([*_args(prepared_dataset, out), "--workers", "2"]) == 0
    assert "steps: 6 in the grid, 0 run now, 6 done already" in capsys.readouterr().out
    assert json.loads((out / "report" / "results.json").read_text()) == results
    assert {r["split"] for r in results} == {"test"} and "Scored on the test scenes" in report

    # the same grid scored on another split: nothing is trained again, every step is tested on it, and the
    # report holds only that split's figures
    monkeypatch.setattr("cdseg.evaluate.run_test", run_test)  # testing again is allowed, training is not
    assert main([*_args(prepared_dataset, out), "--split", "val"]) == 0
    assert "steps: 6 in the grid, 6 run now, 0 done already" in capsys.readouterr().out
    rows = json.loads((out / "report" / "results.json").read_text())
    assert len(rows) == len(results) and {r["split"] for r in rows} == {"val"}
    assert "Scored on the val scenes" in (out / "report" / "report.md").read_text()
    metrics = json.loads((runs / "mib" / "seed-0" / "step-1" / "eval" / "metrics.json").read_text())
    assert metrics["dataset"]["split"] == "val"


def test_step0_is_shared_only_between_identical_step0_recipes(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path / "ds", tmp_path / "exp", methods=["ft", "uft", "mib", "mib-cd", "ft-cd"], seeds=[3])
    providers = step0_providers(cfg)
    by = {c.name: p.name for c, p in providers.items()}
    # ft, uft, mib: plain CE at step 0; mib-cd and ft-cd: CE plus the same self-invariance term
    assert by == {"ft": "ft", "uft": "ft", "mib": "ft", "mib-cd": "mib-cd", "ft-cd": "mib-cd"}
    alone = step0_providers(_cfg(tmp_path / "ds", tmp_path / "exp", share_step0=False))
    assert all(c == p for c, p in alone.items())
    assert Cell("222a", "ft", 3) in providers


@pytest.mark.parametrize(("over", "needle"), [
    ({"methods": ["sgd"]}, "unknown"),
    ({"methods": ["mib-cd+fd"]}, "not defined"),
    ({"methods": ["ft", "ft"]}, "twice"),
    ({"seeds": []}, "at least one seed"),
    ({"train_options": {"seed": 3}}, "sets those per run"),
])
def test_bad_grid_is_one_line(tmp_path: Path, over: dict[str, Any], needle: str,
                              capsys: pytest.CaptureFixture[str]) -> None:
    args = ["experiment", "--dataset", str(tmp_path), "--output", str(tmp_path / "o")]
    for key, value in over.items():
        flag = "--" + key.replace("_", "-")
        args += [flag, json.dumps(value) if isinstance(value, dict) else ",".join(map(str, value)) or "[]"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err and not (tmp_path / "o").exists()


def test_joint_cells_train_from_scratch(tmp_path: Path) -> None:
    # joint refuses a previous checkpoint (it trains every seen class from scratch): the grid must not give it
    # one, or its steps 1.. fail while the other cells run on
    from cdseg.experiment.grid import train_config

    cfg = _cfg(tmp_path / "ds", tmp_path / "exp", methods=["mib", "joint"])
    prev = str(tmp_path / "exp" / "runs" / "222a" / "mib" / "seed-0" / "step-0" / "model")
    assert train_config(cfg, Cell("222a", "joint", 0), 1, prev).prev_checkpoint is None
    assert train_config(cfg, Cell("222a", "mib", 0), 1, prev).prev_checkpoint == prev


def test_each_worker_has_its_own_metrics_port_and_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cdseg.experiment.grid import worker_slots

    cfg = _cfg(tmp_path / "ds", tmp_path / "exp")
    monkeypatch.delenv("CDSEG_METRICS__PORT", raising=False)  # the default base, whatever the caller's environment
    ports = [s["CDSEG_METRICS__PORT"] for s in worker_slots(cfg, 3, gpus=[])]
    assert ports == ["9400", "9401", "9402"]  # as the local ranks of a node: no worker warns of a taken port
    monkeypatch.setenv("CDSEG_METRICS__PORT", "0")
    assert {s["CDSEG_METRICS__PORT"] for s in worker_slots(cfg, 2, gpus=[])} == {"0"}  # disabled stays disabled
    monkeypatch.setenv("CDSEG_METRICS__PORT", "nine")  # not a port: untouched, for the run's config to reject
    assert all("CDSEG_METRICS__PORT" not in s for s in worker_slots(cfg, 2, gpus=[]))
    monkeypatch.setenv("CDSEG_METRICS__PORT", "9500")
    # several GPUs: round robin over the visible ones, as CUDA_VISIBLE_DEVICES names them
    slots = worker_slots(cfg, 3, gpus=["2", "5"])
    assert [(s["CDSEG_METRICS__PORT"], s["CUDA_VISIBLE_DEVICES"]) for s in slots] == [
        ("9500", "2"), ("9501", "5"), ("9502", "2")]
    assert all("CUDA_VISIBLE_DEVICES" not in s for s in worker_slots(cfg, 2, gpus=["0"]))  # one GPU: all share it
    named = _cfg(tmp_path / "ds", tmp_path / "exp", train_options={**TRAIN, "trainer.device": "cuda:1"})
    assert all("CUDA_VISIBLE_DEVICES" not in s for s in worker_slots(named, 2, gpus=["0", "1"]))  # the user's choice


def _worker_env(rendezvous: str) -> tuple[str, str]:
    """A task that returns the worker's slot once two processes hold one task each (so both workers answer)."""
    import os
    import time

    Path(rendezvous, str(os.getpid())).touch()
    deadline = time.monotonic() + 120
    while len(os.listdir(rendezvous)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    return os.environ.get("CDSEG_METRICS__PORT", ""), os.environ.get("CUDA_VISIBLE_DEVICES", "")


def test_the_pool_hands_one_slot_to_each_worker(tmp_path: Path) -> None:
    # the real spawn pool of `cdseg experiment --workers 2`: each process takes its own slot before any work
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from cdseg.experiment.grid import _init_worker

    context = mp.get_context("spawn")
    slots = context.Queue()
    for env in ({"CDSEG_METRICS__PORT": "9700", "CUDA_VISIBLE_DEVICES": "3"}, {"CDSEG_METRICS__PORT": "9701"}):
        slots.put(env)
    with ProcessPoolExecutor(2, mp_context=context, initializer=_init_worker, initargs=(1, slots)) as pool:
        seen = {f.result(timeout=180) for f in [pool.submit(_worker_env, str(tmp_path)) for _ in range(2)]}
    assert seen == {("9700", "3"), ("9701", "")}
