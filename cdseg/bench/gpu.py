"""`cdseg bench gpu`: the one GPU check, a fixed sequence of benches in one command, within a time budget.

Sections, each a fresh process with its own time limit (so one failure or hang costs only its share):
environment; inplace-abn's CUDA kernels (built from a local source with --inplace-abn-src when missing:
nothing is fetched); `bench train` with the paper's model (tresnet_m, 512 px, batch 8, bf16, channels_last;
ft / mib / mib-cd; BN and iABN interleaved; the loader in the same rounds); `bench train --compile both`;
`bench ddp` with two processes on one GPU (NCCL may refuse two ranks on one device: then its error is the
finding); `bench eval` on a 6000 px scene with and without TTA. The summary states each figure against
its target. Without CUDA the same sections run with CPU-sized settings (profile cpu), or toy ones (tiny).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from cdseg.config.base import Section

log = logging.getLogger(__name__)

#: settings per profile: the paper's model on a GPU, a small model on CPU, a toy one for tests
PROFILES: dict[str, dict[str, Any]] = {
    "gpu": {"encoder": "tresnet_m", "size": 512, "batch": 8, "iters": 6, "warmup": 3, "amp": True,
            "scene": 6000, "window": 512, "eval_batch": 8, "loader_scene": 2048, "device": "cuda:0"},
    "cpu": {"encoder": "resnet18", "size": 128, "batch": 2, "iters": 3, "warmup": 1, "amp": False,
            "scene": 1024, "window": 512, "eval_batch": 4, "loader_scene": 1024, "device": "cpu"},
    "tiny": {"encoder": "test_resnet", "size": 32, "batch": 2, "iters": 2, "warmup": 0, "amp": False,
             "scene": 96, "window": 64, "eval_batch": 2, "loader_scene": 96, "device": "cpu"},
}
#: each section's share of the budget (seconds at the default 480 s budget; scaled with --budget-s)
SHARES = {"env": 20, "iabn": 90, "train": 130, "compile": 110, "ddp": 40, "eval": 90}


class BenchGpuConfig(Section):
    """Options of `cdseg bench gpu`."""

    profile: Literal["auto", "gpu", "cpu", "tiny"] = Field("auto", description="settings: gpu (the paper's model), "
                                                           "cpu, tiny (tests); auto: gpu when CUDA is available")
    budget_s: int = Field(480, ge=10, description="time for the whole check (seconds); each section gets its share")
    output_dir: str = Field("gpu-check", description="folder for each section's JSON and log")
    inplace_abn_src: str | None = Field(None, description="local inplace-abn 1.1.0 source (sdist or folder) to build "
                                        "its CUDA kernels from when they are missing (no download)")
    sections: list[str] = Field(list(SHARES), description="sections to run: " + ", ".join(SHARES))


@dataclass
class SectionResult:
    """What one section's process did."""

    name: str
    rc: int | None  # None: timed out
    seconds: float
    tail: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _commands(p: dict[str, Any], out: Path, cfg: BenchGpuConfig) -> dict[str, list[str]]:
    py = [sys.executable, "-m", "cdseg", "bench"]
    train = ["--encoder", p["encoder"], "--size", str(p["size"]), "--batch-size", str(p["batch"]),
             "--iters", str(p["iters"]), "--warmup", str(p["warmup"]), "--device", p["device"]]
    if p["amp"]:
        train += ["--amp", "--amp-dtype", "bf16", "--channels-last"]
    probe = ("import torch, inplace_abn; from cdseg.models.norm import norm_act; "
             "print('inplace_abn', inplace_abn.__file__); "
             "m = norm_act('iabn', 8, 'leaky_relu').cuda(); print('iabn CUDA kernels: ok', type(m).__name__, "
             "m(torch.randn(2, 8, 4, 4, device='cuda')).shape)")
    env_probe = ("import torch, platform; print('python', platform.python_version(), 'torch', torch.__version__, "
                 "'cuda', torch.version.cuda, 'available', torch.cuda.is_available()); "
                 "[print('gpu', i, torch.cuda.get_device_name(i), torch.cuda.get_device_capability(i)) "
                 "for i in range(torch.cuda.device_count())]")
    return {
        "env": [sys.executable, "-c", env_probe],
        "iabn": [sys.executable, "-c", probe],
        "train": [*py, "train", *train, "--methods", "ft,mib,mib-cd", "--norms", "bn,iabn", "--loader",
                  "--loader-augment-on", "both", "--loader-scene-size", str(p["loader_scene"]), "--output", str(out / "train.json")],
        "compile": [*py, "train", *train, "--methods", "ft", "--norms", "bn", "--compile", "both", "--no-flops",
                    "--output", str(out / "compile.json")],
        "ddp": [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                str(_free_port()), "-m", "cdseg", "bench", "ddp", "--encoder", p["encoder"], "--size", str(p["size"]),
                "--batch-size", str(p["batch"]), "--iters", str(p["iters"]), "--device", p["device"],
                *(["--amp"] if p["amp"] else []), "--output", str(out / "ddp.json")],
        "eval": [*py, "eval", "--height", str(p["scene"]), "--width", str(p["scene"]), "--window", str(p["window"]),
                 "--overlap", str(p["window"] // 4), "--batch-size", str(p["eval_batch"]), "--encoder", p["encoder"],
                 "--bands", "4", "--classes", "6", "--repeats", "1", "--device", p["device"],
                 *(["--amp"] if p["amp"] else []), "--output", str(out / "eval.json")],
    }


def _status(res: SectionResult) -> str:
    return "timeout" if res.rc is None else f"rc {res.rc}"


def _run(name: str, cmd: list[str], timeout: float, out: Path, env: dict[str, str]) -> SectionResult:
    start = time.perf_counter()
    log = out / f"{name}.log"
    with open(log, "w") as fh:
        try:
            rc: int | None = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout, env=env).returncode
        except subprocess.TimeoutExpired:
            rc = None
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if " WARNING " not in ln]
    return SectionResult(name, rc, time.perf_counter() - start, "\n".join(lines[-15:]))


def _build_iabn(src: str, out: Path, timeout: float, env: dict[str, str]) -> SectionResult:
    """pip-build inplace-abn from a local source, no index, no build isolation (the project's recipe)."""
    benv = {**env, "SETUPTOOLS_SCM_PRETEND_VERSION": "1.1.0", "CUDA_HOME": env.get("CUDA_HOME", "/usr/local/cuda"),
            "TORCH_CUDA_ARCH_LIST": env.get("TORCH_CUDA_ARCH_LIST", "9.0")}
    cmd = [sys.executable, "-m", "pip", "install", "--no-index", "--no-build-isolation", "--no-deps",
           "--force-reinstall", src]
    return _run("iabn-build", cmd, timeout, out, benv)


def _load(out: Path, name: str) -> dict[str, Any] | None:
    path = out / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def summarise_check(out: Path, profile: str, results: list[SectionResult]) -> list[str]:
    """The check's figures against their targets, from the sections' JSON files."""
    lines = [f"GPU check summary (profile {profile}; sections: "
             + ", ".join(f"{r.name} {_status(r)} {r.seconds:.0f}s" for r in results)
             + ")"]
    train = _load(out, "train")
    if train:
        rows = {(r["norm"], r["method"]): r for r in train["results"]}
        lines.append(f"train on {train['device']}: " + "; ".join(
            f"{n}/{m} {r['step_time_s'] * 1e3:.1f} ms (x ft {r['ratio_to_ft']['median']:.2f})"
            for (n, m), r in rows.items()))
        ft = rows.get(("bn", "ft"))
        if ft and ft.get("utilisation"):
            lines.append(f"  ft share of the dense bf16 peak: {100 * ft['utilisation']:.1f}% (target >= 40%)")
        else:
            lines.append("  ft share of the dense peak: not known for this device (CPU, or a GPU not in the table)")
        mem = [(m, rows[("iabn", m)]["peak_memory_gib"] / rows[("bn", m)]["peak_memory_gib"])
               for (n, m) in rows if n == "bn" and ("iabn", m) in rows and rows[("bn", m)].get("peak_memory_gib")]
        lines.append("  step memory iABN / BN: " + (", ".join(f"{m} {v:.2f}" for m, v in mem) + " (target <= 0.6)"
                                                    if mem else "not measured (CPU: no allocator peak)"))
        if train.get("loader"):
            ld = train["loader"]
            for mode, figs in (ld.get("modes") or {ld.get("augment_on", "loader"): ld}).items():
                extra = (f"; device part {1e3 * figs['device_part_s_per_batch']['median']:.1f} ms per batch"
                         if "device_part_s_per_batch" in figs else "")
                lines.append(f"  loader (augment on {mode}): {figs['patches_per_s_per_worker']['median']:.1f} patches/s "
                             f"per worker, {ld['workers']} workers feed {figs['feed_over_consumption']['median']:.2f}x "
                             f"what ft consumes (target >= 1.5){extra}")
    comp = _load(out, "compile")
    if comp:
        row = next((r for r in comp["results"] if r.get("compiled")), None)
        if row and row.get("ratio_to_eager"):
            lines.append(f"torch.compile: ft compiled / eager step time {row['ratio_to_eager']['median']:.2f}")
    ddp = _load(out, "ddp")
    ddp_run = next((r for r in results if r.name == "ddp"), None)
    if ddp:
        lines.append(f"ddp: {ddp['world_size']} processes, {ddp['backend']} on {ddp['device']}: DDP / plain step "
                     f"{ddp['ddp_over_plain']['median']:.2f}")
    elif ddp_run is not None:
        why = next((ln for ln in ddp_run.tail.splitlines()[::-1] if "Error" in ln or "error" in ln), ddp_run.tail[-200:])
        lines.append(f"ddp: not run to the end ({_status(ddp_run)}): {why.strip()}")
    ev = _load(out, "eval")
    if ev:
        parts = [f"{k} {60 / ev[k]['seconds']:.2f} scenes/min" for k in ("plain", "tta") if k in ev]
        lines.append(f"eval {ev['scene'][0]}x{ev['scene'][1]} px on {ev['device']}: " + ", ".join(parts))
        mem = ev["memory"]
        lines.append(f"  peak memory of a window batch / its logits: plain {mem['plain']['over_logits']:.2f}x"
                     + (f", full forward {mem['features']['over_logits']:.2f}x" if "features" in mem else "")
                     + " (target <= 3x)")
    return lines


def run_bench_gpu(cfg: BenchGpuConfig) -> tuple[list[SectionResult], list[str]]:
    """Run the sections within the budget; return what each did and the summary lines."""
    import torch

    profile = cfg.profile if cfg.profile != "auto" else ("gpu" if torch.cuda.is_available() else "cpu")
    p = PROFILES[profile]
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("PYTHONPATH", str(Path(__file__).resolve().parents[2]))
    commands = _commands(p, out, cfg)
    unknown = [s for s in cfg.sections if s not in commands]
    if unknown:
        raise ValueError(f"--sections {unknown} unknown; choose from {list(commands)}")
    scale = cfg.budget_s / sum(SHARES.values())
    deadline = time.monotonic() + cfg.budget_s
    results: list[SectionResult] = []
    for name in cfg.sections:
        if name == "iabn" and profile != "gpu":
            continue  # the CUDA kernels matter only on a GPU; CPU runs use inplace-abn's CPU path or the fallback
        left = deadline - time.monotonic()
        if left < 5:
            results.append(SectionResult(name, None, 0.0, "skipped: the budget is spent"))
            continue
        res = _run(name, commands[name], min(SHARES[name] * scale, left), out, env)
        if name == "iabn" and res.rc != 0 and cfg.inplace_abn_src:
            build = _build_iabn(cfg.inplace_abn_src, out, max(5.0, min(240.0, deadline - time.monotonic() - 240)), env)
            results.append(build)
            log.info("== iabn-build: %s in %.0f s\n%s", _status(build), build.seconds, build.tail)
            res = _run("iabn", commands["iabn"], 30, out, env)
        results.append(res)
        log.info("== %s: %s in %.0f s\n%s", name, _status(res), res.seconds, res.tail)
    return results, summarise_check(out, profile, results)


def run_and_print(cfg: BenchGpuConfig) -> int:
    """CLI entry: run every section, print the summary (also written to <output-dir>/summary.txt)."""
    results, summary = run_bench_gpu(cfg)
    text = "\n".join(summary)
    print(text)
    (Path(cfg.output_dir) / "summary.txt").write_text(text + "\n")
    return 0 if all(r.rc == 0 for r in results) else 1
