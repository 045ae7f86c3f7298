"""Run a task's pipeline with KFP's local runner (`cdseg pipeline run --local`, `cdseg demo`).

Every task runs as a subprocess of this Python (`SubprocessRunner(use_venv=False)`), with the
pipeline root (all artifacts) under the output folder. Component output goes to a log file; the
caller gets a line per task as it starts and ends.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.factory import BuildOptions, make_pipeline

log = logging.getLogger("cdseg.pipelines")

#: KFP's local orchestrator logs these (colour codes stripped)
_START = re.compile(r"Executing task '([^']+)'")
_END = re.compile(r"Task '([^']+)' finished with status (\w+)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
#: component log lines worth showing while a task runs (training iterations, validations, evaluation summary)
_DETAIL = re.compile(r"(?:\]: |cdseg\.[\w.]+: )((?:train it \d+|validation epoch \d+|step \d+: mIoU|training \S+ step \d+).*)")


@dataclass
class LocalRun:
    """A finished local run: where everything is, and each step's metrics (metrics.json of evaluate)."""

    task: str
    pipeline_root: Path
    run_dir: Path
    report_dir: Path
    log_file: Path
    metrics: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0


Progress = Callable[[str], None]


class _Tee(io.TextIOBase):
    """Write everything to a log file; report task starts and ends (and the last line) to `progress`."""

    def __init__(self, log_file: Path, progress: Progress | None, echo: bool, labels: dict[str, str]) -> None:
        self.labels = labels
        self.handle = log_file.open("w", encoding="utf-8", buffering=1)
        self.progress = progress
        self.echo = echo
        self.started: dict[str, float] = {}
        self.last_line = ""

    def write(self, text: str) -> int:
        self.handle.write(text)
        if self.echo:
            sys.__stdout__.write(text)  # type: ignore[union-attr]
        for line in text.splitlines():
            if line.strip():
                self.note(line)
        return len(text)

    def note(self, line: str) -> None:
        """Turn KFP's task log lines into progress events."""
        clean = _ANSI.sub("", line)
        self.last_line = clean
        if self.progress is None:
            return
        if m := _START.search(clean):
            self.started[m.group(1)] = time.monotonic()
            self.progress(f"start {self.labels.get(m.group(1), m.group(1))}")
        elif m := _END.search(clean):
            took = time.monotonic() - self.started.get(m.group(1), time.monotonic())
            self.progress(f"{m.group(2).lower()} {self.labels.get(m.group(1), m.group(1))} ({took:.0f} s)")
        elif m := _DETAIL.search(clean):
            text = m.group(1)
            self.progress("  " + (text if len(text) <= 110 else text[:107] + "..."))

    def flush(self) -> None:
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


class _LogToTee(logging.Handler):
    def __init__(self, tee: _Tee) -> None:
        super().__init__()
        self.tee = tee

    def emit(self, record: logging.LogRecord) -> None:
        self.tee.write(self.format(record) + "\n")


@contextlib.contextmanager
def _captured(log_file: Path, progress: Progress | None, echo: bool, labels: dict[str, str]) -> Iterator[_Tee]:
    """Send the local runner's stdout and its `kfp` log records to the log file (and progress)."""
    tee = _Tee(log_file, progress, echo, labels)
    handler = _LogToTee(tee)
    kfp_log = logging.getLogger("kfp")
    saved = (kfp_log.handlers[:], kfp_log.propagate, kfp_log.level)
    kfp_log.handlers[:] = [handler]
    kfp_log.propagate = False
    kfp_log.setLevel(logging.INFO)
    try:
        with contextlib.redirect_stdout(tee), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*(non-Python base image|have no effect in the current local runner).*")
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"kfp\..*")
            yield tee
    finally:
        kfp_log.handlers[:], kfp_log.propagate = saved[0], saved[1]
        kfp_log.setLevel(saved[2])
        tee.close()


def run_local(task: str, *, arguments: dict[str, Any], output: str | Path, num_steps: int | None = None,
              build: BuildOptions | None = None, caching: bool = True, progress: Progress | None = None,
              echo: bool = False, dataset: str = "potsdam", dataset_def: str | None = None) -> LocalRun:
    """Run the pipeline of `task` locally with `arguments` (pipeline parameters; `source` is required)."""
    from kfp import local

    from cdseg.errors import ConfigError
    from cdseg.utils.processes import no_orphans
    from cdseg.utils.signals import terminate_as_exception

    if not arguments.get("source"):
        raise ConfigError("the pipeline needs source, the release folder (cdseg synth writes one)")
    from pipelines.params import migrate_arguments

    # the compiled pipeline's default is a cluster job (auto); a local run trains in its own processes
    arguments = migrate_arguments({"launch_mode": "local", **arguments})
    if arguments["launch_mode"] != "local":
        raise ConfigError(f"launch_mode={arguments['launch_mode']!r}: a local pipeline run trains in its own "
                          "processes; use launch_mode=local (job modes need a cluster: cdseg pipeline submit)")
    out = Path(output).resolve()
    root = out / "pipeline_root"
    root.mkdir(parents=True, exist_ok=True)
    log_file = out / "pipeline.log"
    # locally a failed task is a bug or bad input, not a preempted node: no retries unless asked
    pipeline = make_pipeline(task, num_steps=num_steps, options=build or BuildOptions(retries=0), dataset=dataset,
                             dataset_def=dataset_def)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), enable_caching=caching,
               cache_root=str(out.parent / ".kfp_cache") if caching else None, raise_on_error=False)
    before = {p.name for p in root.iterdir()}
    t0 = time.monotonic()
    labels = task_labels(pipeline)
    # SIGTERM stops the run like Ctrl-C, and an interrupted run must not leave its current task's process running
    # (KFP's runner does not stop it)
    with terminate_as_exception(), no_orphans(), _captured(log_file, progress, echo, labels) as tee:
        result = pipeline(**arguments)
    wall = time.monotonic() - t0
    new = sorted((p for p in root.iterdir() if p.name not in before), key=lambda p: p.stat().st_mtime)
    run_dir = new[-1] if new else root
    del result  # the pipeline has no output of its own (its tasks run inside the exit handler, see factory.py)
    report_dir = find_report(run_dir)
    if report_dir is None:
        raise RuntimeError(f"the local pipeline run of task {task} failed ({tee.last_line.strip() or 'see the log'}); "
                           f"full log: {log_file}")
    return LocalRun(task=task, pipeline_root=root, run_dir=run_dir, report_dir=report_dir, log_file=log_file,
                    metrics=step_metrics(report_dir), wall_s=wall)


def find_report(run_dir: Path, holding: str = "metrics") -> Path | None:
    """The report task's `report_dir` artifact in a local run's folder, the one holding `holding` (the task
    pipeline's report: `metrics`; the experiment pipeline's: `results.json`); None when the report did not finish.
    It is never a cached one from another run's folder: the report's `run_id` input is this run's id."""
    found = [p for p in run_dir.glob("**/report_dir") if p.is_dir() and (p / holding).exists()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def task_labels(pipeline: Any) -> dict[str, str]:
    """KFP task name -> display name (`train-step-2` -> `train step 1`), for progress lines."""
    spec = pipeline.pipeline_spec
    dags = [spec.root.dag] + [c.dag for c in spec.components.values() if c.WhichOneof("implementation") == "dag"]
    return {name: task.task_info.name or name for dag in dags for name, task in dag.tasks.items()}


def step_metrics(report_dir: Path) -> list[dict[str, Any]]:
    """Each step's metrics.json, as the report component kept them (`metrics/step-<k>.json`), by step."""
    files = sorted((report_dir / "metrics").glob("step-*.json"), key=lambda p: int(p.stem.split("-")[1]))
    return [json.loads(p.read_text()) for p in files]
