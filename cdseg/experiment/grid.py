"""The grid of an experiment and the runs in it: each cell trains and tests its steps in order, resumably.

A cell is (task, method or variant, seed) and owns `<output>/runs/<task>/<name>/seed-<s>/`, a run folder
as `cdseg train` / `cdseg test` write it. A step whose model and evaluation are both there is skipped, so
a rerun of a finished grid trains nothing; an interrupted step resumes from its newest checkpoint (the
trainer's own resume). Methods whose step 0 is identical (same resolved options but for those that act
from step 1 on) share one step-0 model per task and seed: the first such cell trains it, the others start
their step 1 from it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from cdseg import storage as store
from cdseg.experiment.config import ExperimentConfig
from cdseg.utils.processes import stop_descendants

log = logging.getLogger("cdseg.experiment")


@dataclass(frozen=True)
class Cell:
    """One run of the grid."""

    task: str
    name: str
    seed: int

    def run_dir(self, output: str) -> str:
        return store.join(output, "runs", self.task, self.name, f"seed-{self.seed}")


def cells(cfg: ExperimentConfig) -> list[Cell]:
    """Every cell, tasks outermost, then seeds, then methods (the order the runs start in)."""
    return [Cell(task, name, seed) for task in cfg.tasks for seed in cfg.seeds for name in cfg.methods]


def num_steps(cfg: ExperimentConfig, task: str) -> int:
    """Steps run for `task`: all of them, or --steps."""
    from cdseg.data.prepared import read_manifest
    from cdseg.tasks.task import get_task

    total = get_task(task, read_manifest(cfg.dataset)).num_steps
    return min(total, cfg.steps) if cfg.steps else total


def train_config(cfg: ExperimentConfig, cell: Cell, step: int, prev: str | None = None) -> Any:
    """The validated TrainConfig of one step of a cell."""
    from cdseg.config import load_config
    from cdseg.train.config import TrainConfig

    cli = {**cfg.options_of(cell.name), "method": cfg.method_of(cell.name), "seed": cell.seed, "task.name": cell.task,
           "task.step": step, "data.dataset": cfg.dataset, "output": cell.run_dir(cfg.output)}
    if prev is not None and TrainConfig.uses_previous_checkpoint(cli["method"]):  # joint trains from scratch
        cli["prev_checkpoint"] = prev
    return load_config(TrainConfig, cli=cli)


def step0_providers(cfg: ExperimentConfig) -> dict[Cell, Cell]:
    """cell -> the cell whose step-0 model it uses (itself when it trains its own)."""
    from cdseg.train.config import step0_fingerprint

    first: dict[tuple[str, int, str], Cell] = {}
    out: dict[Cell, Cell] = {}
    for cell in cells(cfg):
        key = (cell.task, cell.seed, step0_fingerprint(train_config(cfg, cell, 0)) if cfg.share_step0 else cell.name)
        out[cell] = first.setdefault(key, cell)
    return out


def model_uri(cfg: ExperimentConfig, cell: Cell, step: int) -> str:
    return store.join(cell.run_dir(cfg.output), f"step-{step}", "model")


def metrics_uri(cfg: ExperimentConfig, cell: Cell, step: int) -> str:
    return store.join(cell.run_dir(cfg.output), f"step-{step}", "eval", "metrics.json")


def trained(cfg: ExperimentConfig, cell: Cell, step: int) -> bool:
    """The step's model is written (its card last, so a card means a complete model)."""
    return store.exists(store.join(model_uri(cfg, cell, step), "model.json"))


def tested(cfg: ExperimentConfig, cell: Cell, step: int) -> bool:
    """The step's evaluation is written, and on `cfg.split`: a grid first scored on val (to choose settings) and
    rerun with --split test is tested again, not reported with its validation figures."""
    uri = metrics_uri(cfg, cell, step)
    if not store.exists(uri):
        return False
    metrics = json.loads(store.read_bytes(uri))
    return bool((metrics.get("dataset") or {}).get("split", "test") == cfg.split)


def step_done(cfg: ExperimentConfig, cell: Cell, step: int) -> bool:
    """The step's model and its evaluation on `cfg.split` are both written (manifest-last writes make this safe)."""
    return trained(cfg, cell, step) and tested(cfg, cell, step)


def run_step(cfg: ExperimentConfig, cell: Cell, step: int, prev: str | None) -> bool:
    """Train (unless trained) and test (unless tested on this split) one step of a cell; True when it did anything."""
    from cdseg.evaluate import run_test
    from cdseg.evaluate.config import TestConfig
    from cdseg.train import run_train

    if step_done(cfg, cell, step):
        log.info("%s %s seed %d step %d: done already", cell.task, cell.name, cell.seed, step)
        return False
    trained_before = trained(cfg, cell, step)
    if trained_before:
        log.info("%s %s seed %d step %d: testing on %s", cell.task, cell.name, cell.seed, step, cfg.split)
        model = model_uri(cfg, cell, step)
    else:
        log.info("%s %s seed %d step %d: training", cell.task, cell.name, cell.seed, step)
        model = run_train(train_config(cfg, cell, step, prev))
    # overwrite: replaces only an evaluation of this step on another split (an identical one was skipped above)
    run_test(TestConfig(checkpoint=model, dataset=cfg.dataset, output=cell.run_dir(cfg.output), split=cfg.split,
                        eval=cfg.eval, overwrite=trained_before))
    return True


def _run_steps(cfg_json: str, cell: Cell, steps: list[int], step0_from: Cell) -> int:
    """Run `steps` of `cell` in order (a worker process's unit of work); returns how many ran."""
    cfg = ExperimentConfig.model_validate_json(cfg_json)
    ran = 0
    for step in steps:
        source = step0_from if step == 1 else cell
        prev = model_uri(cfg, source, step - 1) if step > 0 else None
        ran += run_step(cfg, cell, step, prev)
    return ran


def run_grid(cfg: ExperimentConfig, progress: Callable[[str], None] = log.info) -> dict[str, int]:
    """Run every cell (step-0 providers first); returns counts of steps run and skipped. SIGTERM stops it as
    Ctrl-C does (worker processes stopped; every interrupted step resumes on the next run)."""
    from cdseg.utils.signals import terminate_as_exception

    with terminate_as_exception():
        return _run_grid(cfg, progress)


def _run_grid(cfg: ExperimentConfig, progress: Callable[[str], None]) -> dict[str, int]:
    providers = step0_providers(cfg)
    all_cells = cells(cfg)
    phases = [
        [(c, [0]) for c in all_cells if providers[c] == c],
        [(c, list(range(1, num_steps(cfg, c.task)))) for c in all_cells],
    ]
    cfg_json = cfg.model_dump_json()
    total = sum(len(steps) for phase in phases for _, steps in phase)
    ran = 0
    for phase in phases:
        work = [(c, steps) for c, steps in phase if steps]
        if cfg.workers == 1:
            for c, steps in work:
                ran += _run_steps(cfg_json, c, steps, providers[c])
                progress(f"{c.task} {c.name} seed {c.seed}: steps {steps[0]}..{steps[-1]} ready")
            continue
        # each process trains with its share of the cores, its own GPU and its own /metrics port (one slot each);
        # spawn: no forked torch state
        threads = max(1, (os.cpu_count() or 1) // cfg.workers)
        import multiprocessing as mp

        context = mp.get_context("spawn")
        slots = context.Queue()
        for slot in worker_slots(cfg, cfg.workers):
            slots.put(slot)
        pool = ProcessPoolExecutor(cfg.workers, mp_context=context, initializer=_init_worker, initargs=(threads, slots))
        failed: list[Exception] = []
        try:
            futures = {pool.submit(_run_steps, cfg_json, c, steps, providers[c]): (c, steps) for c, steps in work}
            for future, (c, steps) in futures.items():
                try:
                    ran += future.result()
                except Exception as exc:  # a failed cell: the others go on, and the first failure ends the grid
                    failed.append(exc)
                    progress(f"{c.task} {c.name} seed {c.seed}: failed: {exc}")
                    continue
                progress(f"{c.task} {c.name} seed {c.seed}: steps {steps[0]}..{steps[-1]} ready")
        except BaseException:  # an interrupt: stop the workers now (each interrupted step resumes on the next run)
            pool.shutdown(wait=False, cancel_futures=True)
            stop_descendants()
            raise
        pool.shutdown()
        if failed:
            raise failed[0]
    return {"steps": total, "ran": ran, "skipped": total - ran}


def worker_slots(cfg: ExperimentConfig, workers: int, gpus: list[str] | None = None) -> list[dict[str, str]]:
    """The environment of each grid worker process: its own /metrics port (metrics.port + i, as the local ranks of a
    node have them, so that no worker but the first warns of a taken port) and, on a machine with several GPUs, one
    of them (CUDA_VISIBLE_DEVICES, round robin), unless a run names its device (trainer.device / eval.device cuda:N).
    `gpus`: the visible GPUs (default: this machine's)."""
    from cdseg.metrics.config import DEFAULT_PORT

    try:
        base: int | None = int(os.environ.get("CDSEG_METRICS__PORT", DEFAULT_PORT) or 0)
    except ValueError:  # not a port: left as it is, for the run's config to reject in one line
        base = None
    if gpus is None:
        gpus = visible_gpus()
    named = [cfg.options_of(n).get("trainer.device", "auto") for n in cfg.methods] + [cfg.eval.device]
    pin = len(gpus) > 1 and all(d in ("auto", "cuda") for d in named)
    slots = []
    for i in range(workers):
        env = {} if base is None else {"CDSEG_METRICS__PORT": str(base + i if base else 0)}
        if pin:
            env["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
        slots.append(env)
    return slots


def visible_gpus() -> list[str]:
    """The CUDA devices this process may use, as CUDA_VISIBLE_DEVICES names them (empty without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return []
    listed = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    count = torch.cuda.device_count()
    return listed[:count] if listed else [str(i) for i in range(count)]


def _init_worker(threads: int, slots: Any) -> None:
    import contextlib
    import queue

    # before torch touches CUDA in this process; more processes than slots (a pool that replaced a worker): defaults
    with contextlib.suppress(queue.Empty):
        os.environ.update(slots.get(timeout=10))
    import torch

    torch.set_num_threads(threads)
    from cdseg.utils.logging import init_logging

    init_logging("text", "WARNING")


def collect(cfg: ExperimentConfig) -> list[dict[str, Any]]:
    """One row per finished (cell, step): old / new / all mIoU and per-class IoU, from each step's metrics.json."""
    providers = step0_providers(cfg)
    rows = []
    for cell in cells(cfg):
        for step in range(num_steps(cfg, cell.task)):
            source = providers[cell] if step == 0 else cell
            uri = metrics_uri(cfg, source, step)
            if not store.exists(uri):
                continue
            row = row_of(json.loads(store.read_text(uri)), cell, step, source.name if step == 0 else cell.name)
            if row["split"] == cfg.split:  # a step not yet tested again on this split is left out, not mixed in
                rows.append(row)
    return rows


def row_of(metrics: dict[str, Any], cell: Cell, step: int, step0_from: str) -> dict[str, Any]:
    """The report's row of one step of a cell, from that step's metrics.json (`cdseg test`'s)."""
    return {
        "task": cell.task, "name": cell.name, "seed": cell.seed, "step": step, "step0_from": step0_from,
        "split": (metrics.get("dataset") or {}).get("split", "test"),
        **{g: metrics["mean"][g]["miou"] for g in ("old", "new", "all")},
        "new_classes": metrics["new_classes"], "old_classes": metrics["old_classes"],
        "iou": {c: v["iou"] for c, v in metrics["per_class"].items() if v["group"] in ("old", "new")},
    }
