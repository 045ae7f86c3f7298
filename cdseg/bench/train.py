"""`cdseg bench train`: step time of every method at an incremental step >= 1, same model and batch.

Figures per method (and per norm kind): median step time (forward + backward + optimizer, frozen teacher
included; methods timed interleaved, one iteration of each per round, so a shared machine slows them
alike), images/s, the device memory one iteration adds on top of the resident models and optimizer (CUDA:
activations, gradients, workspace), FLOPs of one step (torch's FLOP counter) and achieved FLOP/s against
the device's dense peak (--peak-tflops). Ratios against ft in the same run:
targets mib/ft <= 1.4 and mib-cd/ft <= 2.5 (the arithmetic floor of mib-cd is about 2.33: two
forward+backward passes plus one frozen forward, against one forward+backward), plop/ft <= 1.5 in FLOPs
(one frozen forward of the teacher shared by its terms), ewc, pi, rw / ft <= 1.1. `mib-cd-2fwd` times the
original's two separate student forwards, to show what the single concatenated forward saves. Methods with a
parameter-importance term get a prior (their own importance at the start) so that the penalty is paid too;
PLOP's pseudo-labels use the threshold floor (the per-class medians are measured once per step, not timed).
"""

from __future__ import annotations

import functools
import json
import logging
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

from cdseg.bench.timing import Timings, interleave, summarise
from cdseg.config.base import Section

log = logging.getLogger(__name__)

#: dense bf16 peak of known GPUs (TFLOP/s, no sparsity) for --peak-tflops auto
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


#: images/s one H100/H200 consumes training the paper's model with ft, as stated (no GPU has measured it yet):
#: torch's FLOP counter gives 413.6 GFLOP per 512 px image for an ft step of tresnet_m (51.7 GFLOP for 2 images
#: of 128 px, x 16 for the pixels), and the GPU check's target is 40% of the 989 TFLOP/s dense bf16 peak:
#: 0.4 x 989e12 / 413.6e9 = 957. mib-cd does 2.33x the arithmetic (410 images/s). Pass it as
#: --consume-images-per-s to size the loader against a GPU on a machine without one.
GPU_FT_IMAGES_PER_S = 957.0

#: ratio targets against ft in the same run ("flops": FLOPs per step; otherwise step time)
TARGETS = {"mib/ft": 1.4, "mib-cd/ft": 2.5, "mib-cd/ft floor": 2.33, "plop/ft flops": 1.5, "ewc/ft": 1.1,
           "pi/ft": 1.1, "rw/ft": 1.1}


def _default_methods() -> list[str]:
    from cdseg.train.methods import method_names

    return [m for m in method_names() if m != "joint"]


class BenchTrainConfig(Section):
    """Options of `cdseg bench train` (random data, random weights: speed only)."""

    methods: list[str] = Field(default_factory=lambda: [*_default_methods(), "mib-cd-2fwd"],
                               description="methods to time (default: every method but joint, which steps as ft; "
                               "mib-cd-2fwd: mib-cd with two student forwards, the original's way)")
    encoder: str = Field("resnet18", description="timm encoder (tresnet_m for the paper's model)")
    norms: list[str] = Field(["bn"], description="decoder norm kinds to compare, e.g. bn,iabn")
    size: int = Field(128, ge=32, description="crop size (pixels)")
    batch_size: int = Field(4, ge=1, description="images per iteration")
    bands: int = Field(3, ge=1, le=5, description="input bands")
    heads: list[int] = Field([3, 2], description="outputs per head of the step (default: 222a step 1)")
    iters: int = Field(10, ge=1, description="timed rounds (one iteration of every norm/method per round, interleaved)")
    warmup: int = Field(2, ge=0, description="untimed rounds first")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N")
    amp: bool = Field(False, description="autocast on CUDA")
    amp_dtype: Literal["bf16", "fp16"] = Field("bf16", description="autocast dtype")
    channels_last: bool = Field(False, description="channels_last tensors and weights")
    compile: Literal["off", "on", "both"] = Field("off", description="torch.compile the models: off, on, or both "
                                                  "(each method eager and compiled, interleaved)")
    flops: bool = Field(True, description="count the FLOPs of one step (torch.utils.flop_counter)")
    peak_tflops: float = Field(0.0, ge=0, description="dense peak of the device in TFLOP/s for the utilisation "
                               "figure (0: looked up for known GPUs)")
    threads: int = Field(0, ge=0, description="CPU threads (0: torch's default)")
    seed: int = Field(0, description="seed of data and weights")
    output: str | None = Field(None, description="also write the figures as JSON to this file")
    loader: bool = Field(False, description="also time the augmented training Dataset (one worker process's batch "
                         "of --batch-size patches of --size px) interleaved with the steps, and report its headroom")
    loader_data: str | None = Field(None, description="prepared dataset for --loader (default: one generated scene "
                                    "of --loader-scene-size px, prepared in a temporary folder)")
    loader_scene_size: int = Field(2048, ge=64, description="size of the generated scene for --loader (pixels)")
    loader_workers: int = Field(0, ge=0, description="DataLoader workers per rank for the headroom figure "
                                "(0: the training default, --data.workers)")
    loader_augment_on: Literal["auto", "loader", "device", "both"] = Field(
        "auto", description="where the augmentation timed by --loader runs (as --data.augment-on): loader (the whole "
        "augmentation in the worker), device (the worker part in the worker, the device part timed apart on this "
        "run's device), both (interleaved in the same rounds), auto (what training does here: device on CUDA)")
    consume_images_per_s: float = Field(0.0, ge=0, description="images/s one device consumes, for the headroom "
                                        "(957: the paper's model with ft at 40% of an H100's bf16 peak, "
                                        "GPU_FT_IMAGES_PER_S) "
                                        "figure (0: this run's ft step rate of the first norm)")


def _models(cfg: BenchTrainConfig, norm: str, device: torch.device) -> tuple[Any, Any]:
    from cdseg.models import ModelConfig, build_segmenter

    bands = ["R", "G", "B", "IR", "DSM"][: cfg.bands]
    act = "leaky_relu" if norm.startswith("iabn") else "relu"
    mcfg = ModelConfig.model_validate({"encoder": cfg.encoder, "pretrained": False, "norm": norm, "act": act})
    torch.manual_seed(cfg.seed)
    student = build_segmenter(mcfg, cfg.heads, bands)
    teacher = build_segmenter(mcfg, cfg.heads[:-1], bands)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    return student.to(device).to(memory_format=fmt), teacher.to(device).to(memory_format=fmt)


def _method_step(method: str, student: Any, teacher: Any, seed: int) -> Any:
    from cdseg.config import load_config
    from cdseg.losses.registry import build_terms
    from cdseg.losses.term import StepInfo
    from cdseg.train.config import TrainConfig
    from cdseg.train.step import MethodStep

    two = method.endswith("-2fwd")
    tc = load_config(TrainConfig, cli={"method": method.removesuffix("-2fwd")}, environ={})
    old = sum(teacher.head_sizes)
    info = StepInfo(step=1, old_classes=old, num_outputs=sum(student.head_sizes), has_teacher=True, seed=seed)
    terms = [t.to(next(student.parameters()).device) for t in build_terms(tc, info)]
    step = MethodStep(student, teacher, terms, tc.aug, seed, single_forward=not two)
    prior = step.carry_state()
    if prior:  # a previous step's importance, so that the penalty is computed and applied as at step >= 1
        step.load_carried(prior)
    return step


def _setup(cfg: BenchTrainConfig, method: str, norm: str, device: torch.device, compiled: bool = False) -> Any:
    """A closure running one full training iteration of `method` (its own model, optimizer and batch)."""
    import contextlib

    student, teacher = _models(cfg, norm, device)
    if compiled:
        student.compile()
        teacher.compile()
    step = _method_step(method, student, teacher, cfg.seed)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(cfg.seed)
    x = torch.rand(cfg.batch_size, cfg.bands, cfg.size, cfg.size, generator=g).to(device)
    y = torch.randint(0, sum(cfg.heads), (cfg.batch_size, cfg.size, cfg.size), generator=g).to(device)
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if cfg.amp_dtype == "bf16" else torch.float16
    scaler = torch.amp.GradScaler("cuda") if cuda and cfg.amp and cfg.amp_dtype == "fp16" else None

    def autocast() -> Any:
        return torch.autocast("cuda", dtype=dtype) if cuda and cfg.amp else contextlib.nullcontext()

    def one(it: int) -> None:
        with autocast():
            loss = step(x, y, it)["loss"]
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            step.after_backward(float(scaler.get_scale()))
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            step.after_backward()
            opt.step()
        step.after_step()

    step.train()
    return one


def _time_all(cfg: BenchTrainConfig, device: torch.device,
              extra: dict[str, Callable[[int], Any]] | None = None) -> tuple[list[dict[str, Any]], Timings]:
    """Time every (norm, method) on the same batch, interleaved: one iteration of each per round, so a
    machine shared with other work slows them alike; per-round ratios against ft of the same norm."""
    cuda = device.type == "cuda"
    modes = {"off": [False], "on": [True], "both": [False, True]}[cfg.compile]
    runs = {f"{norm}/{m}{'+compile' if c else ''}": _setup(cfg, m, norm, device, c)
            for c in modes for norm in cfg.norms for m in cfg.methods}
    flops: dict[str, int] = {}
    for name, one in runs.items():
        flops[name] = flops.get(name.removesuffix("+compile"), 0)  # FLOPs are counted on the eager model
        if name.endswith("+compile"):
            for it in range(2):  # compile outside the timings (the warm-up rounds may be fewer)
                one(it)
        elif cfg.flops:
            from torch.utils.flop_counter import FlopCounterMode

            counter = FlopCounterMode(display=False)
            with counter:
                one(0)
            flops[name] = int(counter.get_total_flops())
    peak_mem: dict[str, float] = {}
    base_mem = [0]

    def before(name: str, r: int) -> None:
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            base_mem[0] = torch.cuda.memory_allocated(device)

    def after(name: str, r: int) -> None:
        if cuda:
            extra = (torch.cuda.max_memory_allocated(device) - base_mem[0]) / 2**30
            peak_mem[name] = max(peak_mem.get(name, 0.0), extra)

    sync = (lambda: torch.cuda.synchronize(device)) if cuda else None
    variants: dict[str, Callable[[int], Any]] = {name: functools.partial(_iteration, one, cfg.warmup + 1) for name, one in runs.items()}
    variants |= extra or {}
    timings = interleave(variants, cfg.iters, warmup=cfg.warmup, sync=sync, before=before, after=after)
    rows = []
    for name in runs:  # the training variants (extra ones, e.g. the loader, are the caller's)
        norm, method = name.split("/", 1)
        suffix = "+compile" if method.endswith("+compile") else ""
        method = method.removesuffix(suffix)
        med = timings.median(name)
        row: dict[str, Any] = {"method": method, "norm": norm, "compiled": bool(suffix), "step_time_s": med, "step_time_min_s": timings.best(name),
                               "images_per_s": cfg.batch_size / med, "flops_per_step": flops[name],
                               "achieved_tflops": flops[name] / med / 1e12 if flops[name] else None}
        base = f"{norm}/ft{suffix}"
        row["cpu_s"] = statistics.median(timings.cpu[name])
        if base in runs:
            row["ratio_to_ft"] = timings.ratio(name, base).as_dict()
            row["flops_ratio_to_ft"] = flops[name] / flops[base] if flops[base] else None
            # CPU seconds of this process: steadier than wall time on a loaded CPU-only machine
            row["cpu_ratio_to_ft"] = timings.cpu_ratio(name, base).as_dict()
        first = f"{cfg.norms[0]}/{method}{suffix}"
        if norm != cfg.norms[0] and first in runs:
            row[f"ratio_to_{cfg.norms[0]}"] = timings.ratio(name, first).as_dict()
        if suffix and f"{norm}/{method}" in runs:
            row["ratio_to_eager"] = timings.ratio(name, f"{norm}/{method}").as_dict()
        if cuda:
            # every variant's models stay resident during the interleaved timing, so the figure is the memory
            # one iteration adds on top of what was allocated before it (activations, gradients, workspace)
            row["peak_memory_gib"] = peak_mem[name]
        rows.append(row)
    return rows, timings


def _iteration(one: Callable[[int], None], offset: int, r: int) -> None:
    one(offset + r)


def _loader_modes(cfg: BenchTrainConfig, device: torch.device) -> list[str]:
    """The augmentation modes --loader times: loader, device or both."""
    if cfg.loader_augment_on == "both":
        return ["loader", "device"]
    if cfg.loader_augment_on == "auto":
        return ["device" if device.type == "cuda" else "loader"]
    return [cfg.loader_augment_on]


#: the timed variant whose rate is a worker's, per augmentation mode
_WORKER_VARIANT = {"loader": "loader", "device": "loader-worker"}


def _loader_figures(cfg: BenchTrainConfig, timings: Timings, modes: list[str], device: torch.device) -> dict[str, Any]:
    """Patches/s of one loader process, and what the default workers per rank feed against what one device eats.

    Two rates per worker: patches per wall second (what this machine gave, load included) and patches per CPU
    second of the loader (what a worker with a core of its own would serve). `workers_for_target` is how many
    workers per rank reach 1.5x the consumption at each rate. With the augmentation on the device the rates are the
    worker part's; the device part's time per batch is reported beside them (on a GPU it adds to the step).
    The top-level figures are those of the mode training uses on this device (`augment_on`), `modes` has each."""
    from cdseg.data.config import DataConfig

    workers = cfg.loader_workers or DataConfig.model_fields["workers"].default
    target = 1.5
    out: dict[str, Any] = {"workers": workers, "crop": cfg.size, "target_feed_over_consumption": target}
    ft = f"{cfg.norms[0]}/ft"
    if cfg.consume_images_per_s:
        consume = cfg.consume_images_per_s
        out["consumption"] = f"stated: {consume:g} images/s"
    else:
        if ft not in timings.times:
            raise ValueError("--loader needs ft among --methods or a stated --consume-images-per-s")
        consume = cfg.batch_size / timings.median(ft)
        out["consumption"] = f"this run's {ft} step rate ({consume:.2f} images/s)"
    out["consumption_images_per_s"] = consume
    figures: dict[str, dict[str, Any]] = {}
    for mode in modes:
        figs = _worker_rates(cfg, timings, _WORKER_VARIANT[mode], workers, consume, target)
        if mode == "device":
            figs["device_part_s_per_batch"] = summarise(timings.times["loader-device"]).as_dict()
            figs["device_part_cpu_s_per_batch"] = summarise(timings.cpu["loader-device"]).as_dict()
            figs["device_part_on"] = device.type
            if ft in timings.times:
                figs["device_part_over_ft_step"] = timings.ratio("loader-device", ft).as_dict()
        figures[mode] = figs
    training = "device" if device.type == "cuda" else "loader"
    main = training if training in figures else modes[0]
    out.update(figures[main])
    out["augment_on"], out["modes"] = main, figures
    if len(figures) == 2:  # same rounds: how much less a worker does with the pixel work on the device
        out["loader_over_worker_part"] = timings.ratio("loader", "loader-worker").as_dict()
    return out


def _worker_rates(cfg: BenchTrainConfig, timings: Timings, name: str, workers: int, consume: float,
                  target: float) -> dict[str, Any]:
    """One worker's rates (timed variant `name`), the default workers' feed and the workers 1.5x needs."""
    import math

    per_worker = [cfg.batch_size / t for t in timings.times[name]]
    per_cpu_s = [cfg.batch_size / max(c, 1e-9) for c in timings.cpu.get(name, [])]
    out: dict[str, Any] = {"patches_per_s_per_worker": summarise(per_worker).as_dict()}
    if per_cpu_s:
        out["patches_per_cpu_s_per_worker"] = summarise(per_cpu_s).as_dict()
    ft = f"{cfg.norms[0]}/ft"
    if cfg.consume_images_per_s:
        feed = [workers * rate / consume for rate in per_worker]
    else:  # same batch size on both sides: the feed ratio is workers x step time / loader time, round by round
        feed = [workers * s / t for s, t in zip(timings.times[ft], timings.times[name], strict=True)]
    out["feed_over_consumption"] = summarise(feed).as_dict()
    out["workers_for_target"] = math.ceil(target * consume / out["patches_per_s_per_worker"]["median"])
    if per_cpu_s:
        out["workers_for_target_cpu"] = math.ceil(target * consume / out["patches_per_cpu_s_per_worker"]["median"])
        out["feed_over_consumption_cpu"] = workers * out["patches_per_cpu_s_per_worker"]["median"] / consume
    return out


def _peak(cfg: BenchTrainConfig, device: torch.device) -> float | None:
    if cfg.peak_tflops:
        return cfg.peak_tflops
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def run_bench_train(cfg: BenchTrainConfig) -> dict[str, Any]:
    """Time every method (and norm) on the same model and batch; return figures and ratios against ft."""
    from cdseg.train.distributed import pick_device

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device, 0)
    if cfg.amp and device.type != "cuda":
        log.warning("--amp is ignored on CPU")
    peak = _peak(cfg, device)
    extra: dict[str, Callable[[int], Any]] = {}
    modes = _loader_modes(cfg, device)
    with tempfile.TemporaryDirectory(prefix="cdseg-bench-loader-") as tmp:
        if cfg.loader:
            from cdseg.bench.loader import DevicePartProbe, LoaderProbe, make_prepared

            data = cfg.loader_data or make_prepared(Path(tmp), cfg.loader_scene_size, cfg.size)
            if "loader" in modes:
                extra["loader"] = LoaderProbe(data, cfg.size, cfg.batch_size, cfg.seed)
            if "device" in modes:  # the worker part, then (same round) the device part on the batch it made
                worker = LoaderProbe(data, cfg.size, cfg.batch_size, cfg.seed, augment_on="device")
                extra["loader-worker"] = worker
                extra["loader-device"] = DevicePartProbe(worker, cfg.size, device)
        rows, timings = _time_all(cfg, device, extra)
    for row in rows:
        if peak and row["achieved_tflops"]:
            row["utilisation"] = row["achieved_tflops"] / peak
        log.info("%s/%s: %.4fs per step", row["norm"], row["method"], row["step_time_s"])
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    return {"device": device_name, "config": cfg.model_dump(mode="json"), "peak_tflops": peak, "results": rows,
            "rounds": cfg.iters, "seconds": timings.times,
            "loader": _loader_figures(cfg, timings, modes, device) if cfg.loader else None,
            "targets": dict(TARGETS)}


def _ratio_text(ratio: dict[str, float] | None) -> str:
    return f"{ratio['median']:.2f} [{ratio['q1']:.2f}-{ratio['q3']:.2f}]" if ratio else "-"


def format_table(result: dict[str, Any]) -> str:
    """A plain-text table of the figures (ratios: median over rounds [quartiles])."""
    norms = result["config"]["norms"]
    other = f"x {norms[0]}"
    lines = [f"device: {result['device']}; {result['rounds']} interleaved rounds, ratios per round: median [quartiles]",
             f"{'norm':<6} {'method':<18} {'step s':>8} {'img/s':>8} {'x ft':>17} {'x ft (CPU s)':>17} {other:>17} "
             f"{'x eager':>17} {'GFLOP':>8} {'x ft':>6} "
             f"{'TFLOP/s':>8} {'util':>6} {'step GiB':>8}"]
    for r in result["results"]:
        util = f"{100 * r['utilisation']:.1f}%" if r.get("utilisation") else "-"
        mem = f"{r['peak_memory_gib']:.2f}" if "peak_memory_gib" in r else "-"
        tf = f"{r['achieved_tflops']:.3f}" if r.get("achieved_tflops") else "-"
        method = r["method"] + ("+compile" if r.get("compiled") else "")
        fx = f"{r['flops_ratio_to_ft']:.2f}" if r.get("flops_ratio_to_ft") else "-"
        lines.append(f"{r['norm']:<6} {method:<18} {r['step_time_s']:>8.4f} {r['images_per_s']:>8.1f} "
                     f"{_ratio_text(r.get('ratio_to_ft')):>17} {_ratio_text(r.get('cpu_ratio_to_ft')):>17} "
                     f"{_ratio_text(r.get(f'ratio_to_{norms[0]}')):>17} "
                     f"{_ratio_text(r.get('ratio_to_eager')):>17} "
                     f"{r['flops_per_step'] / 1e9:>8.1f} {fx:>6} {tf:>8} {util:>6} {mem:>8}")
    lines.append("targets: mib/ft <= 1.4, mib-cd/ft <= 2.5 (floor ~2.33) in step time; plop/ft <= 1.5 in FLOPs; "
                 "ewc, pi, rw / ft <= 1.1")
    if result.get("loader"):
        ld = result["loader"]
        feed = ld["feed_over_consumption"]
        lines.append(f"loader: {_ratio_text(ld['patches_per_s_per_worker'])} augmented {ld['crop']} px patches/s per "
                     f"worker process (augment on {ld.get('augment_on', 'loader')}); {ld['workers']} workers per rank feed {feed['median']:.3g} "
                     f"[{feed['q1']:.3g}-{feed['q3']:.3g}]x "
                     f"what one device consumes ({ld['consumption']}); target >= {ld['target_feed_over_consumption']}")
        for mode, figs in (ld.get("modes") or {ld.get("augment_on", "loader"): ld}).items():
            lines += _loader_lines(ld, mode, figs)
        if ld.get("loader_over_worker_part"):
            lines.append(f"loader: a worker's time per batch, augment on loader / on device: "
                         f"{_ratio_text(ld['loader_over_worker_part'])} (per round)")
    return "\n".join(lines)


def _loader_lines(ld: dict[str, Any], mode: str, figs: dict[str, Any]) -> list[str]:
    """The loader figures of one augmentation mode, as text."""
    target = ld["target_feed_over_consumption"]
    where = "the whole augmentation in the worker" if mode == "loader" else "worker part only (draws, uint8 crop)"
    feed = figs["feed_over_consumption"]
    cpu = figs.get("patches_per_cpu_s_per_worker")
    lines = [f"loader, augment on {mode} ({where}): {_ratio_text(figs['patches_per_s_per_worker'])} patches/s per "
             f"worker (wall), {_ratio_text(cpu)} per CPU second of a worker (a core of its own); {ld['workers']} "
             f"workers per rank feed {feed['median']:.3g} [{feed['q1']:.3g}-{feed['q3']:.3g}]x (wall), "
             f"{figs.get('feed_over_consumption_cpu', float('nan')):.3g}x (CPU s) what one device consumes "
             f"({ld['consumption']}); target >= {target}; workers per rank for it: {figs['workers_for_target']} at "
             f"this machine's rate, {figs.get('workers_for_target_cpu', '-')} with a core per worker"]
    if "device_part_s_per_batch" in figs:
        dev = figs["device_part_s_per_batch"]
        note = ("CPU time here; on a GPU it is part of the step" if figs["device_part_on"] == "cpu"
                else "part of the step on this device")
        ratio = figs.get("device_part_over_ft_step")
        lines.append(f"loader, augment on device: device part {1e3 * dev['median']:.1f} "
                     f"[{1e3 * dev['q1']:.1f}-{1e3 * dev['q3']:.1f}] ms per batch ({note})"
                     + (f", {_ratio_text(ratio)}x the ft step" if ratio else ""))
    return lines


def run_and_print(cfg: BenchTrainConfig) -> int:
    """CLI entry: run, print the table, write JSON when asked."""
    result = run_bench_train(cfg)
    print(format_table(result))
    if cfg.output:
        from cdseg.utils.atomic import write_text_atomic

        write_text_atomic(Path(cfg.output), json.dumps(result, indent=2))
    return 0
