"""`cdseg bench train`: step time of ft, mib and mib-cd at an incremental step >= 1, same model and batch.

Figures per method (and per norm kind): median step time (forward + backward + optimizer, frozen teacher
included; methods timed interleaved, one iteration of each per round, so a shared machine slows them
alike), images/s, the device memory one iteration adds on top of the resident models and optimizer (CUDA:
activations, gradients, workspace), FLOPs of one step (torch's FLOP counter) and achieved FLOP/s against
the device's dense peak (--peak-tflops). Ratios against ft in the same run:
targets mib/ft <= 1.4 and mib-cd/ft <= 2.5 (the arithmetic floor of mib-cd is about 2.33: two
forward+backward passes plus one frozen forward, against one forward+backward). `mib-cd-2fwd` times the
original's two separate student forwards, to show what the single concatenated forward saves.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from typing import Any, Literal

import torch
from pydantic import Field

from cdseg.config.base import Section

log = logging.getLogger(__name__)

#: dense bf16 peak of known GPUs (TFLOP/s, no sparsity) for --peak-tflops auto
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


class BenchTrainConfig(Section):
    """Options of `cdseg bench train` (random data, random weights: speed only)."""

    methods: list[str] = Field(["ft", "mib", "mib-cd", "mib-cd-2fwd"], description="methods to time (mib-cd-2fwd: "
                               "mib-cd with two student forwards, the original's way)")
    encoder: str = Field("resnet18", description="timm encoder (tresnet_m for the paper's model)")
    norms: list[str] = Field(["bn"], description="decoder norm kinds to compare, e.g. bn,iabn")
    size: int = Field(128, ge=32, description="crop size (pixels)")
    batch_size: int = Field(4, ge=1, description="images per iteration")
    bands: int = Field(3, ge=1, le=5, description="input bands")
    heads: list[int] = Field([3, 2], description="outputs per head of the step (default: 222a step 1)")
    iters: int = Field(10, ge=1, description="timed iterations per method")
    warmup: int = Field(2, ge=0, description="untimed iterations first")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N")
    amp: bool = Field(False, description="autocast on CUDA")
    amp_dtype: Literal["bf16", "fp16"] = Field("bf16", description="autocast dtype")
    channels_last: bool = Field(False, description="channels_last tensors and weights")
    flops: bool = Field(True, description="count the FLOPs of one step (torch.utils.flop_counter)")
    peak_tflops: float = Field(0.0, ge=0, description="dense peak of the device in TFLOP/s for the utilisation "
                               "figure (0: looked up for known GPUs)")
    threads: int = Field(0, ge=0, description="CPU threads (0: torch's default)")
    seed: int = Field(0, description="seed of data and weights")
    output: str | None = Field(None, description="also write the figures as JSON to this file")


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
    from cdseg.losses import build_kd_loss, build_seg_loss
    from cdseg.train.config import TrainConfig
    from cdseg.train.step import MethodStep

    two = method.endswith("-2fwd")
    tc = load_config(TrainConfig, cli={"method": method.removesuffix("-2fwd")}, environ={})
    old = sum(teacher.head_sizes)
    kd = build_kd_loss(tc.kd)
    return MethodStep(student, teacher, build_seg_loss(tc.ce, old), kd, float(tc.kd.weight), tc.aug, seed,
                      single_forward=not two)


def _setup(cfg: BenchTrainConfig, method: str, norm: str, device: torch.device) -> Any:
    """A closure running one full training iteration of `method` (its own model, optimizer and batch)."""
    import contextlib

    student, teacher = _models(cfg, norm, device)
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
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()

    step.train()
    return one


def _time_all(cfg: BenchTrainConfig, norm: str, device: torch.device) -> list[dict[str, Any]]:
    """Time every method on the same batch, interleaved (one iteration of each per round), so that a
    machine shared with other work slows them alike; the median per method is reported."""
    cuda = device.type == "cuda"
    runs = {m: _setup(cfg, m, norm, device) for m in cfg.methods}
    flops: dict[str, int] = {}
    for method, one in runs.items():
        for it in range(cfg.warmup):
            one(it)
        flops[method] = 0
        if cfg.flops:
            from torch.utils.flop_counter import FlopCounterMode

            counter = FlopCounterMode(display=False)
            with counter:
                one(cfg.warmup)
            flops[method] = int(counter.get_total_flops())
    times: dict[str, list[float]] = {m: [] for m in runs}
    peak_mem: dict[str, float] = {}
    for it in range(cfg.iters):
        for method, one in runs.items():
            base = 0
            if cuda:
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
            t0 = time.perf_counter()
            one(cfg.warmup + 1 + it)
            if cuda:
                torch.cuda.synchronize(device)
                extra = (torch.cuda.max_memory_allocated(device) - base) / 2**30
                peak_mem[method] = max(peak_mem.get(method, 0.0), extra)
            times[method].append(time.perf_counter() - t0)
    rows = []
    for method in runs:
        med = statistics.median(times[method])
        row: dict[str, Any] = {"method": method, "norm": norm, "step_time_s": med, "step_time_min_s": min(times[method]),
                               "images_per_s": cfg.batch_size / med, "flops_per_step": flops[method],
                               "achieved_tflops": flops[method] / med / 1e12 if flops[method] else None}
        if cuda:
            # every method's models stay resident during the interleaved timing, so the figure is the memory
            # one iteration adds on top of what was allocated before it (activations, gradients, workspace)
            row["peak_memory_gib"] = peak_mem[method]
        rows.append(row)
    return rows


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
    rows = []
    for norm in cfg.norms:
        for row in _time_all(cfg, norm, device):
            if peak and row["achieved_tflops"]:
                row["utilisation"] = row["achieved_tflops"] / peak
            rows.append(row)
            log.info("%s/%s: %.4fs per step", norm, row["method"], row["step_time_s"])
    for row in rows:
        base = next((r for r in rows if r["norm"] == row["norm"] and r["method"] == "ft"), None)
        row["ratio_to_ft"] = row["step_time_s"] / base["step_time_s"] if base else None
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    return {"device": device_name, "config": cfg.model_dump(mode="json"), "peak_tflops": peak, "results": rows,
            "targets": {"mib/ft": 1.4, "mib-cd/ft": 2.5, "mib-cd/ft floor": 2.33}}


def format_table(result: dict[str, Any]) -> str:
    """A plain-text table of the figures."""
    lines = [f"device: {result['device']}",
             f"{'norm':<6} {'method':<12} {'step s':>8} {'img/s':>8} {'x ft':>6} {'GFLOP':>8} {'TFLOP/s':>8} {'util':>6} {'step GiB':>8}"]
    for r in result["results"]:
        util = f"{100 * r['utilisation']:.1f}%" if r.get("utilisation") else "-"
        mem = f"{r['peak_memory_gib']:.2f}" if "peak_memory_gib" in r else "-"
        tf = f"{r['achieved_tflops']:.3f}" if r.get("achieved_tflops") else "-"
        lines.append(f"{r['norm']:<6} {r['method']:<12} {r['step_time_s']:>8.4f} {r['images_per_s']:>8.1f} "
                     f"{(r['ratio_to_ft'] or 0):>6.2f} {r['flops_per_step'] / 1e9:>8.1f} {tf:>8} {util:>6} {mem:>8}")
    lines.append("targets: mib/ft <= 1.4, mib-cd/ft <= 2.5 (floor ~2.33)")
    return "\n".join(lines)


def run_and_print(cfg: BenchTrainConfig) -> int:
    """CLI entry: run, print the table, write JSON when asked."""
    result = run_bench_train(cfg)
    print(format_table(result))
    if cfg.output:
        from pathlib import Path

        from cdseg.utils.atomic import write_text_atomic

        write_text_atomic(Path(cfg.output), json.dumps(result, indent=2))
    return 0
