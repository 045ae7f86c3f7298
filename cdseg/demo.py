"""`cdseg demo`, the main job: generated scenes -> the Kubeflow pipeline run locally -> per-step table + report.

1. `cdseg synth` a small Potsdam-layout release (kept and reused while its options do not change);
2. run the task's pipeline with KFP's local runner, once per method (`--compare ft,mib,mib-cd`):
   prepare -> train(0) -> evaluate(0) -> train(1, prev = train(0)) -> ... -> report, on CPU;
   the prepared dataset is shared between methods (KFP's cache), and so is the step-0 model of methods
   that train step 0 identically (ft, uft, mib and joint do; mib-cd and ft-cd add their invariance term);
3. print old / new / all mIoU per method and step, and write one report over every method.

`pipelines` is imported inside the functions (only components/ and pipelines/ import kfp).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from cdseg.config import Section
from cdseg.errors import ConfigError
from cdseg.train.methods import method_names

log = logging.getLogger("cdseg.demo")

METHODS = method_names()

class DemoConfig(Section):
    """`cdseg demo`: the defaults finish in about 10 minutes on 2 CPU cores for one method."""

    output: str = Field("outputs/demo", description="folder of everything the demo writes (data, runs, report)")
    task: str = Field("222a", description="task (222a: impervious+low vegetation, then building+tree, then car+clutter)")
    method: str = Field("mib-cd", description="method to run (ignored with --compare)")
    compare: list[str] = Field(default_factory=list, description="methods to run side by side, e.g. ft,mib,mib-cd")
    scenes: int = Field(6, ge=2, description="generated training scenes (the test split gets 2 more)")
    size: int = Field(512, ge=128, description="side of a generated scene (pixels)")
    seed: int = Field(0, description="seed of the generated scenes and of training")
    iterations: int = Field(80, ge=1, description="training iterations per incremental step (trainer.max_iters)")
    iterations_by_step: dict[int, int] = Field(
        default_factory=lambda: {2: 640}, description="iterations of particular steps, {step: N} "
        "(trainer.max_iters_by_step): step 2 of 222a learns car and clutter, the rarest classes, against MiB's "
        "distillation of the old model, and needs more than --iterations: at 320 clutter stays near 0 IoU, at "
        "640 every method learns both (checked on validation scenes, docs/results.md); '{}' for the same "
        "budget everywhere")
    batch_size: int = Field(4, ge=1, description="images per iteration")
    crop_size: int = Field(96, ge=32, description="training crop (pixels) from the 128 px patches")
    encoder: str = Field("resnet18", description="timm encoder (no pretrained weights: the demo runs offline)")
    params: dict[str, Any] = Field(default_factory=dict, description="other pipeline parameters (JSON), e.g. "
                                   "'{\"train_options\": {\"optimizer.lr\": 0.002}}' (see docs/pipelines.md)")
    caching: bool = Field(True, description="reuse identical pipeline tasks of earlier runs (KFP cache under --output)")
    share_step0: bool = Field(True, description="reuse the step-0 model between methods that train step 0 identically")

    @field_validator("compare", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value

    @field_validator("compare")
    @classmethod
    def _methods(cls, value: list[str]) -> list[str]:
        bad = [m for m in value if m not in METHODS]
        if bad:
            raise ValueError(f"unknown method(s) {bad}; choose from {', '.join(METHODS)}")
        if len(set(value)) != len(value):
            raise ValueError(f"--compare {','.join(value)} names a method twice")
        return value

    @field_validator("method")
    @classmethod
    def _method(cls, value: str) -> str:
        if value not in METHODS:
            raise ValueError(f"unknown method {value!r}; choose from {', '.join(METHODS)}")
        return value

    def methods(self) -> list[str]:
        """The methods to run, in order."""
        return list(self.compare) or [self.method]

    def arguments(self, source: str, method: str) -> dict[str, Any]:
        """Pipeline arguments of one method's run (demo defaults < --params; former parameter names are moved to
        config / train_options first, as for `cdseg pipeline run`)."""
        from pipelines.params import migrate_arguments

        train_options = {"model.encoder": self.encoder, "model.pretrained": False, "trainer.max_iters": self.iterations,
                         "trainer.max_iters_by_step": {str(k): v for k, v in self.iterations_by_step.items()},
                         "trainer.patience": 0, "data.workers": 0, "seed": self.seed, "data.crop_size": self.crop_size}
        args: dict[str, Any] = {
            "source": source, "method": method, "epochs": 1000, "batch_size": self.batch_size,  # max_iters ends it
            "test_options": {"eval.window": 256, "eval.overlap": 64, "eval.previews": 2},
        }
        prepare_options = {"patch_size": 128, "overlap": 0, "val_count": 1}
        extra = migrate_arguments(dict(self.params))
        for key in ("source", "method"):
            if key in extra:
                raise ConfigError(f"--params sets {key!r}; the demo sets it (use --method / --compare)")
        config = dict(extra.pop("config", {}))
        config["prepare_options"] = {**prepare_options, **config.get("prepare_options", {})}
        args["test_options"] = {**args["test_options"], **extra.pop("test_options", {})}
        args["train_options"] = {**train_options, **extra.pop("train_options", {})}
        return {**args, **extra, "config": config}


@dataclass
class DemoResult:
    """What the demo produced."""

    metrics: list[dict[str, Any]]
    report_dir: Path
    runs: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0


Progress = Callable[[str], None]


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def synth_release(cfg: DemoConfig, progress: Progress) -> Path:
    """The generated release, reused while its options are unchanged."""
    from cdseg.data.config import SynthConfig
    from cdseg.data.synth_release import run_synth

    root = Path(cfg.output) / "data"
    release = root / "potsdam"
    synth = SynthConfig.model_validate({"output": str(release), "size": cfg.size, "train_scenes": cfg.scenes,
                                        "test_scenes": 2, "seed": cfg.seed, "overwrite": True})
    stamp = root / "synth.json"
    wanted = json.dumps(synth.model_dump(mode="json", exclude={"output", "overwrite", "workers"}), sort_keys=True)
    if release.is_dir() and stamp.is_file() and stamp.read_text() == wanted:
        progress(f"reusing the generated scenes in {release}")
        return release
    progress(f"generating {cfg.scenes}+2 scenes of {cfg.size} px in {release}")
    t0 = time.monotonic()
    run_synth(synth)
    stamp.write_text(wanted)
    progress(f"  done ({time.monotonic() - t0:.0f} s)")
    return release


def step0_key(args: dict[str, Any], task: str) -> str:
    """What step 0 of a run trains with: its resolved TrainConfig without the options that act from step 1 on."""
    from cdseg.config import load_config
    from cdseg.train.config import TrainConfig, step0_fingerprint

    hp = {"trainer.epochs": args["epochs"], "trainer.batch_size": args["batch_size"]}
    cli = {**hp, **args.get("train_options", {}), "method": args["method"], "task.name": task, "task.step": 0}
    return step0_fingerprint(load_config(TrainConfig, cli=cli))


def run_demo(cfg: DemoConfig, progress: Progress = _stderr) -> DemoResult:
    """Generate scenes, run the pipeline per method, print nothing; returns metrics and the report folder."""
    from cdseg.report import build_report
    from cdseg.utils.atomic import atomic_dir
    from pipelines import BuildOptions
    from pipelines.local import run_local

    t0 = time.monotonic()
    out = Path(cfg.output).resolve()
    release = synth_release(cfg, progress)
    methods = cfg.methods()
    trained_step0: dict[str, Path] = {}  # step0_key -> step-0 model folder of an earlier method
    runs: dict[str, Any] = {}
    metrics: list[dict[str, Any]] = []
    for i, method in enumerate(methods, 1):
        args = cfg.arguments(str(release), method)
        key = step0_key(args, cfg.task) if cfg.share_step0 and len(methods) > 1 else None
        build = BuildOptions(retries=0)
        shared = trained_step0.get(key) if key else None
        if shared is not None:
            build = BuildOptions(retries=0, import_step0=True)
            args["step0_model"] = str(shared)
        started = time.monotonic()
        progress(f"[{i}/{len(methods)}] {method}: pipeline {cfg.task}" +
                 (f" (step 0 shared with {shared.parent.parent.parent.parent.name})" if shared else ""))

        def note(line: str, method: str = method, started: float = started) -> None:
            progress(f"    {time.monotonic() - started:5.0f} s  {method}: {line}")

        run = run_local(cfg.task, arguments=args, output=out / "runs" / method, build=build, caching=cfg.caching,
                        progress=note)
        runs[method] = run
        if key and shared is None:
            trained_step0[key] = run.run_dir / "train-step" / "model"
        for m in run.metrics:
            metrics.append({**m, "method": method})
        progress(f"    {method} done in {time.monotonic() - started:.0f} s; report {run.report_dir / 'report.html'}")
    report_dir = out / "report"
    with atomic_dir(report_dir, replace=True) as tmp:
        build_report(metrics, tmp, title=f"cdseg demo: task {cfg.task}, " + ", ".join(methods))
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    return DemoResult(metrics=metrics, report_dir=report_dir, runs=runs, wall_s=time.monotonic() - t0)


def _pct(mean: dict[str, Any]) -> str:
    if not mean.get("classes") or mean.get("miou") is None:
        return "-"
    return f"{100.0 * float(mean['miou']):.1f}"


def format_table(metrics: list[dict[str, Any]]) -> str:
    """old / new / all mIoU (%) per method and step, as an aligned text table."""
    rows = [("method", "step", "old mIoU", "new mIoU", "all mIoU", "classes seen")]
    for m in sorted(metrics, key=lambda m: (str(m.get("method")), int(m.get("step", 0)))):
        mean = m.get("mean", {})
        rows.append((str(m.get("method") or "-"), str(m.get("step")), _pct(mean.get("old", {})),
                     _pct(mean.get("new", {})), _pct(mean.get("all", {})), str(len(mean.get("all", {}).get("classes", [])))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def print_table(metrics: list[dict[str, Any]]) -> None:
    """Print `format_table` to stdout."""
    print(format_table(metrics))
