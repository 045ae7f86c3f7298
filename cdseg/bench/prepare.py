"""`cdseg bench prepare`: prepare throughput against a file-copy ceiling, and Dataset patches/s.

The ceiling is measured in the same run on the same files: read the input files `prepare` reads and
write as many bytes as `prepare` wrote, with plain buffered file I/O and the same number of processes.
Both make their output files durable (fsync), as an atomic commit must before the rename.
The figure of merit is ceiling time / prepare time (1.0 = prepare is as fast as copying its bytes): of the
best times, and the median over repeats of back-to-back pairs (robust to a shared machine's load).

Two more figures say where the time goes: the CPU seconds prepare spends with one worker (user + system,
all its threads; divided by the core count it is the best wall time any scheduling could reach), and the
time to sha256 the output files once (one thread), which the manifest's checksums cost at the least.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import resource
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from cdseg.config import Section
from cdseg.utils.hashing import sha256_file

log = logging.getLogger(__name__)
_CHUNK = 1 << 22


class BenchPrepareConfig(Section):
    """Options of `cdseg bench prepare` (generated full-size scenes)."""

    scenes: int = Field(2, description="generated training scenes")
    size: int = Field(6000, description="scene size in pixels (the real Potsdam tiles are 6000)")
    workers: list[int] = Field([1, 2], description="worker process counts to measure")
    patch_size: int = Field(512, description="prepare patch size and Dataset crop size in pixels")
    samples: int = Field(200, description="patches drawn from the training Dataset for the patches/s figure")
    repeats: int = Field(1, description="timed runs per setting (the best is reported)")
    compress: Literal["none", "lzw", "deflate", "zstd"] = Field("none", description="GeoTIFF compression passed to prepare")
    work_dir: str | None = Field(None, description="scratch folder (default: a temporary folder, removed after)")
    output: str = Field("bench-prepare.json", description="JSON file for the results")

    @field_validator("scenes", "size", "patch_size", "samples", "repeats")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"{v} must be >= 1")
        return v

    @field_validator("workers")
    @classmethod
    def _workers(cls, v: list[int]) -> list[int]:
        if not v or any(int(w) < 1 for w in v):
            raise ValueError(f"workers={v} must be a list of counts >= 1")
        return [int(w) for w in v]


def _copy_job(args: tuple[list[str], int, str]) -> int:
    """Read the input files, write `out_bytes` bytes to `dst` (recycling what was read)."""
    inputs, out_bytes, dst = args
    buf = b""
    for path in inputs:
        with open(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                buf = chunk
    written = 0
    with open(dst, "wb") as out:
        while written < out_bytes:
            n = min(len(buf) or _CHUNK, out_bytes - written)
            out.write(buf[:n] if buf else bytes(n))
            written += n
        out.flush()
        os.fsync(out.fileno())  # prepare makes its files durable too
    return written


def _ceiling(jobs: list[tuple[list[str], int, str]], workers: int) -> float:
    start = time.perf_counter()
    if workers == 1:
        for job in jobs:
            _copy_job(job)
    else:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver")) as pool:
            list(pool.map(_copy_job, jobs))
    return time.perf_counter() - start


def _cpu_s() -> float:
    """User + system seconds of this process (all threads)."""
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def _sha256_s(files: list[Path]) -> float:
    """Seconds to sha256 `files` once, one thread (from the page cache, as prepare does)."""
    start = time.perf_counter()
    for path in files:
        sha256_file(path)
    return time.perf_counter() - start


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _loader_rate(dataset_dir: Path, cfg: BenchPrepareConfig) -> float:
    import torch

    from cdseg.data.dataset import IncrementalDataset
    from cdseg.data.transforms import train_transform

    ds = IncrementalDataset(str(dataset_dir), "offline", 0, "train", transform=train_transform(cfg.patch_size))
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))
    n = min(cfg.samples, 10 * len(ds))
    ds[0]
    start = time.perf_counter()
    for i in range(n):
        ds[int(order[i % len(ds)])]
    return n / (time.perf_counter() - start)


def _format_reads(dataset_dir: Path, work: Path, patch: int, samples: int) -> list[dict[str, Any]]:
    """Random patch reads (image + label) per second for candidate on-disk formats of the same scene."""
    import numpy as np
    import rasterio
    from rasterio.windows import Window

    from cdseg.data.prepared import PreparedDataset

    ds = PreparedDataset.open(dataset_dir)
    scene = ds.read_scene(ds.scenes("train")[0])
    h, w = scene.label.shape
    rng = np.random.default_rng(0)
    spots = [(int(rng.integers(0, h - patch + 1)), int(rng.integers(0, w - patch + 1))) for _ in range(samples)]
    fmt_dir = work / "formats"
    shutil.rmtree(fmt_dir, ignore_errors=True)
    fmt_dir.mkdir()
    out: list[dict[str, Any]] = []
    variants: dict[str, dict[str, Any]] = {"tiled 256, none, pixel-interleaved": {"tiled": True, "blockxsize": 256, "blockysize": 256},
                "tiled 256, none, band-interleaved (cdseg)": {"tiled": True, "blockxsize": 256, "blockysize": 256,
                                                      "interleave": "band"},
                "tiled 512, none": {"tiled": True, "blockxsize": 512, "blockysize": 512},
                "tiled 256, deflate": {"tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate"},
                "tiled 256, zstd": {"tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "zstd"},
                "striped, none": {"tiled": False}}
    for name, opts in variants.items():
        paths = []
        for kind, data in (("image", scene.image), ("label", scene.label[None])):
            path = fmt_dir / f"{kind}-{len(out)}.tif"
            profile = {"driver": "GTiff", "count": data.shape[0], "height": h, "width": w, "dtype": "uint8",
                       "interleave": "pixel"} | opts
            try:
                with rasterio.open(path, "w", **profile) as dst:
                    dst.write(data)
            except rasterio.errors.RasterioError as exc:  # e.g. a GDAL without zstd
                log.warning("format %s skipped: %s", name, exc)
                break
            paths.append(path)
        if len(paths) < 2:
            continue
        with rasterio.open(paths[0]) as img, rasterio.open(paths[1]) as lab:
            start = time.perf_counter()
            for y, x in spots:
                img.read(window=Window(x, y, patch, patch))
                lab.read(1, window=Window(x, y, patch, patch))
            rate = samples / (time.perf_counter() - start)
        out.append({"format": name, "patches_per_s": rate, "bytes": sum(p.stat().st_size for p in paths)})
    # per-patch files on the prepared grid (reads can only be at grid positions)
    grid = [(r.y, r.x) for r in ds.patches("train") if r.scene == ds.scenes("train")[0]]
    for i, (y, x) in enumerate(grid):
        np.save(fmt_dir / f"p{i}.npy", scene.image[:, y : y + patch, x : x + patch])
        np.save(fmt_dir / f"l{i}.npy", scene.label[y : y + patch, x : x + patch])
    order = rng.integers(0, len(grid), samples)
    start = time.perf_counter()
    for i in order:
        np.load(fmt_dir / f"p{i}.npy")
        np.load(fmt_dir / f"l{i}.npy")
    out.append({"format": "per-patch .npy files", "patches_per_s": samples / (time.perf_counter() - start),
                "bytes": sum(p.stat().st_size for p in fmt_dir.glob("*.npy"))})
    shutil.rmtree(fmt_dir)
    return out


def run_bench_prepare(cfg: BenchPrepareConfig) -> dict[str, Any]:
    """Run the benchmark; returns (and writes to `cfg.output`) the results."""
    from cdseg.data import isprs
    from cdseg.data.config import PrepareConfig, SynthConfig
    from cdseg.data.prepare import run_prepare
    from cdseg.data.synth_release import run_synth

    own = cfg.work_dir is None
    work = Path(tempfile.mkdtemp(prefix="cdseg-bench-")) if own else Path(cfg.work_dir)  # type: ignore[arg-type]
    work.mkdir(parents=True, exist_ok=True)
    try:
        release = work / "release"
        start = time.perf_counter()
        synth_s: float | None = None
        if not release.exists():
            run_synth(SynthConfig(output=str(release), size=cfg.size, train_scenes=cfg.scenes, test_scenes=0,
                                  products=["RGBIR", "labels"], workers=min(2, cfg.scenes)))
            synth_s = time.perf_counter() - start
        ids = list(isprs.POTSDAM_TRAIN[: cfg.scenes])
        inputs = {s: [str(release / isprs.POTSDAM_PRODUCTS["RGBIR"][0] / isprs.image_name("potsdam", s, "RGBIR")),
                      str(release / isprs.POTSDAM_LABELS / isprs.label_name("potsdam", s))] for s in ids}
        in_bytes = sum(os.path.getsize(p) for paths in inputs.values() for p in paths)
        rows = []
        for workers in cfg.workers:
            best_prep = best_ceil = float("inf")
            ratios, cpu = [], []
            for _ in range(cfg.repeats):
                out = work / f"prepared-{workers}"
                shutil.rmtree(out, ignore_errors=True)
                start, cpu_start = time.perf_counter(), _cpu_s()
                run_prepare(PrepareConfig(input=str(release), output=str(out), patch_size=cfg.patch_size,
                                          workers=workers, val_count=0, compress=cfg.compress))
                prep_s = time.perf_counter() - start
                cpu.append(_cpu_s() - cpu_start)  # pool processes are not counted: used for 1 worker only
                best_prep = min(best_prep, prep_s)
                per_scene = {s: sum(os.path.getsize(out / d / f"{s}.tif") for d in ("images", "labels")) for s in ids}
                extra = _dir_bytes(out) - sum(per_scene.values())
                ceil_dir = work / "ceiling"
                shutil.rmtree(ceil_dir, ignore_errors=True)
                ceil_dir.mkdir()
                jobs = [(inputs[s], per_scene[s] + (extra if i == 0 else 0), str(ceil_dir / s)) for i, s in enumerate(ids)]
                ceil_s = _ceiling(jobs, workers)  # right after prepare: both see the same machine load
                best_ceil = min(best_ceil, ceil_s)
                ratios.append(ceil_s / prep_s)
                shutil.rmtree(ceil_dir)
            out_bytes = _dir_bytes(work / f"prepared-{workers}")
            cpu_s = min(cpu) if workers == 1 else None
            sha_s = _sha256_s([work / f"prepared-{workers}" / d / f"{s}.tif" for s in ids for d in ("images", "labels")])
            rows.append({"workers": workers, "prepare_s": best_prep, "ceiling_s": best_ceil,
                         "prepare_MBps": (in_bytes + out_bytes) / best_prep / 1e6,
                         "ceiling_MBps": (in_bytes + out_bytes) / best_ceil / 1e6,
                         "ratio": best_ceil / best_prep, "ratio_median": statistics.median(ratios),
                         "input_bytes": in_bytes, "output_bytes": out_bytes,
                         "prepare_cpu_s": cpu_s, "sha256_s": sha_s,
                         # the best ratio any scheduling of prepare's work on this machine's cores could reach
                         "cpu_bound_ratio": best_ceil / (cpu_s / (os.cpu_count() or 1)) if cpu_s else None})
        rate = _loader_rate(work / f"prepared-{cfg.workers[0]}", cfg)
        formats = _format_reads(work / f"prepared-{cfg.workers[0]}", work, cfg.patch_size, cfg.samples)
        result = {"formats": formats, "scenes": cfg.scenes, "size": cfg.size, "synth_s_per_scene": None if synth_s is None else synth_s / cfg.scenes,
                  "prepare": rows, "loader_patches_per_s": rate, "loader_crop": cfg.patch_size,
                  "cpu_count": os.cpu_count()}
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)
    Path(cfg.output).write_text(json.dumps(result, indent=2))
    return result


def format_table(result: dict[str, Any]) -> str:
    """The results as a plain-text table."""
    synth = result["synth_s_per_scene"]
    made = "reused from --work-dir" if synth is None else f"synth {synth:.1f} s/scene, 2 processes"
    lines = [f"prepare: {result['scenes']} generated scene(s) of {result['size']} px, RGBIR + labels ({made})",
             f"{'workers':>7} {'prepare s':>10} {'ceiling s':>10} {'prepare MB/s':>13} {'ceiling MB/s':>13} {'ratio':>6} "
             f"{'median ratio':>13}"]
    for r in result["prepare"]:
        lines.append(f"{r['workers']:>7} {r['prepare_s']:>10.2f} {r['ceiling_s']:>10.2f} {r['prepare_MBps']:>13.1f} "
                     f"{r['ceiling_MBps']:>13.1f} {r['ratio']:>6.2f} {r['ratio_median']:>13.2f}")
    for r in result["prepare"]:
        if r.get("prepare_cpu_s"):
            lines.append(f"1 worker: {r['prepare_cpu_s']:.2f} CPU-s (user+sys, all threads) on {result['cpu_count']} cores: "
                         f"best reachable ratio {r['cpu_bound_ratio']:.2f}; sha256 of the outputs alone "
                         f"{r['sha256_s']:.2f} s = {r['sha256_s'] / r['ceiling_s']:.2f}x the ceiling's time")
    lines.append(f"{'format (random ' + str(result['loader_crop']) + ' px patch reads)':<40} {'patches/s':>10} {'MB':>8}")
    for r in result.get("formats", []):
        lines.append(f"{r['format']:<40} {r['patches_per_s']:>10.1f} {r['bytes'] / 1e6:>8.1f}")
    lines.append(f"Dataset (augmented, {result['loader_crop']} px, 1 process): {result['loader_patches_per_s']:.1f} patches/s")
    return "\n".join(lines)


def run_and_print(cfg: BenchPrepareConfig) -> int:
    """CLI entry: run, print the table, say where the JSON went."""
    result = run_bench_prepare(cfg)
    print(format_table(result))
    print(f"results: {cfg.output}")
    return 0
