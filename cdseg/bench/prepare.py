"""`cdseg bench prepare`: prepare against its own CPU bound and against GDAL doing the same I/O; Dataset patches/s.

Every round runs, per worker count and interleaved (cdseg.bench.timing, so a shared machine's load moves
them alike): `prepare`; a file-copy ceiling (read the input files prepare reads, write as many bytes as it
wrote, plain buffered I/O, fsync, same process count); and `gdal_translate` writing the same tiled,
band-interleaved layout from the same inputs (image, and the label's first band), same process count,
fsync (Debian's gdal-bin; skipped, with the reason, where the binary is absent).

Figures per worker count, medians over rounds of per-round ratios:
- scheduling efficiency = CPU bound / prepare time (target >= 0.9), the CPU bound being the CPU seconds
  prepare spends with one worker (user + system, all threads; its helper threads already use more than one
  core) spread over all the machine's cores: the wall time a perfect schedule of the same work would take;
- prepare / gdal_translate time (target <= 1.5, prepare also converting labels, computing statistics
  and hashing);
- ceiling / prepare time (1.0 = as fast as copying its bytes; on 2 cores prepare's CPU work keeps it far
  below, so it is context, not a target), and the time to sha256 the outputs once (one thread).
"""

from __future__ import annotations

import functools
import json
import logging
import multiprocessing
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from cdseg.bench.timing import interleave, summarise
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
    repeats: int = Field(3, description="interleaved rounds (prepare, ceiling and gdal_translate once each per round)")
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
    from cdseg.data.prepared import PreparedDataset
    from cdseg.data.transforms import train_transform
    from cdseg.tasks import get_task

    data = PreparedDataset.open(str(dataset_dir))
    ds = IncrementalDataset(data, get_task("offline", data.manifest), 0, "train",
                            transform=train_transform(cfg.patch_size))
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


def _gdal_job(args: tuple[str, str, list[str]]) -> float:
    """gdal_translate one input to `dst` with `options`, fsync the result; returns that child's CPU seconds."""
    src, dst, options = args
    proc = subprocess.Popen(["gdal_translate", "-q", *options, src, dst], stdout=subprocess.DEVNULL)
    _, status, use = os.wait4(proc.pid, 0)  # this child's own usage (RUSAGE_CHILDREN would mix concurrent ones)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, proc.args)
    fd = os.open(dst, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return use.ru_utime + use.ru_stime


def gdal_jobs(inputs: dict[str, list[str]], out: Path, block: int, compress: str) -> list[tuple[str, str, list[str]]]:
    """gdal_translate jobs writing prepare's layout (tiled, band-interleaved) from the same inputs."""
    opts = ["-of", "GTiff", "-co", "TILED=YES", "-co", f"BLOCKXSIZE={block}", "-co", f"BLOCKYSIZE={block}",
            "-co", "INTERLEAVE=BAND", "-co", "BIGTIFF=IF_SAFER"]
    if compress != "none":
        opts += ["-co", f"COMPRESS={compress.upper()}"]
    jobs = []
    for scene, (image, label) in inputs.items():
        jobs.append((image, str(out / f"{scene}-image.tif"), opts))
        jobs.append((label, str(out / f"{scene}-label.tif"), [*opts, "-b", "1"]))  # labels: one band out
    return jobs


def _gdal(jobs: list[tuple[str, str, list[str]]], workers: int) -> float:
    """Run the jobs `workers` at a time (threads waiting on child processes); returns their CPU seconds."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as pool:
        return sum(pool.map(_gdal_job, jobs))


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def run_bench_prepare(cfg: BenchPrepareConfig) -> dict[str, Any]:
    """Run the benchmark; returns (and writes to `cfg.output`) the results."""
    from cdseg.data import isprs
    from cdseg.data.config import PrepareConfig, SynthConfig
    from cdseg.data.prepare import run_prepare
    from cdseg.data.synth_release import run_synth

    own = cfg.work_dir is None
    work = Path(tempfile.mkdtemp(prefix="cdseg-bench-")) if own else Path(cfg.work_dir)  # type: ignore[arg-type]
    work.mkdir(parents=True, exist_ok=True)
    gdal = shutil.which("gdal_translate")
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
        cpu: dict[int, list[float]] = {w: [] for w in cfg.workers}
        gdal_cpu: dict[int, list[float]] = {w: [] for w in cfg.workers}
        sizes: dict[int, dict[str, int]] = {}

        def prepare(workers: int, r: int) -> None:
            out = work / f"prepared-{workers}"
            shutil.rmtree(out, ignore_errors=True)
            cpu_start = _cpu_s()
            run_prepare(PrepareConfig(input=str(release), output=str(out), patch_size=cfg.patch_size,
                                      workers=workers, val_count=0, compress=cfg.compress))
            cpu[workers].append(_cpu_s() - cpu_start)  # pool processes are not counted: used for 1 worker only
            per_scene = {s: sum(os.path.getsize(out / d / f"{s}.tif") for d in ("images", "labels")) for s in ids}
            per_scene[""] = _dir_bytes(out) - sum(per_scene.values())  # manifest, config: added to the first scene
            sizes[workers] = per_scene

        def ceiling(workers: int, r: int) -> None:
            per_scene = sizes[workers]
            jobs = [(inputs[s], per_scene[s] + (per_scene[""] if i == 0 else 0), str(work / "ceiling" / s))
                    for i, s in enumerate(ids)]
            _ceiling(jobs, workers)

        def translate(workers: int, r: int) -> None:
            gdal_cpu[workers].append(_gdal(gdal_jobs(inputs, work / "gdal", 256, cfg.compress), workers))

        def before(name: str, r: int) -> None:  # untimed: clean output folders
            for d in ("ceiling", "gdal"):
                shutil.rmtree(work / d, ignore_errors=True)
                (work / d).mkdir()

        variants: dict[str, Callable[[int], Any]] = {}
        for w in cfg.workers:
            variants[f"prepare-{w}"] = functools.partial(prepare, w)
            variants[f"ceiling-{w}"] = functools.partial(ceiling, w)
            if gdal:
                variants[f"gdal-{w}"] = functools.partial(translate, w)
        timings = interleave(variants, cfg.repeats, before=before)
        for d in ("ceiling", "gdal"):
            shutil.rmtree(work / d, ignore_errors=True)
        rows = []
        cores = os.cpu_count() or 1
        for workers in cfg.workers:
            prep, ceil = f"prepare-{workers}", f"ceiling-{workers}"
            prep_s, ceil_s = timings.median(prep), timings.median(ceil)
            out_bytes = _dir_bytes(work / f"prepared-{workers}")
            one_cpu = _median(cpu[1]) if 1 in cpu else None
            spread = cores  # one worker's helper threads already run on several cores
            bound = [c / spread / t for c, t in zip(cpu[1], timings.times[prep], strict=True)] if one_cpu else []
            sha_s = _sha256_s([work / f"prepared-{workers}" / d / f"{s}.tif" for s in ids for d in ("images", "labels")])
            row: dict[str, Any] = {
                "workers": workers, "prepare_s": prep_s, "ceiling_s": ceil_s,
                "prepare_MBps": (in_bytes + out_bytes) / prep_s / 1e6,
                "ceiling_MBps": (in_bytes + out_bytes) / ceil_s / 1e6,
                "ratio": timings.best(ceil) / timings.best(prep),
                "ceiling_over_prepare": timings.ratio(ceil, prep).as_dict(),
                "input_bytes": in_bytes, "output_bytes": out_bytes,
                "prepare_cpu_s": _median(cpu[workers]) if workers == 1 else None,
                "cpu_bound_s": one_cpu / spread if one_cpu else None,
                # CPU bound / wall time, round by round (1.0: prepare's CPU work kept `spread` cores busy)
                "scheduling_efficiency": summarise(bound).as_dict() if bound else None,
                "sha256_s": sha_s}
            if gdal:
                g = f"gdal-{workers}"
                row |= {"gdal_s": timings.median(g), "gdal_cpu_s": _median(gdal_cpu[workers]),
                        "prepare_over_gdal": timings.ratio(prep, g).as_dict()}
            rows.append(row)
        rate = _loader_rate(work / f"prepared-{cfg.workers[0]}", cfg)
        formats = _format_reads(work / f"prepared-{cfg.workers[0]}", work, cfg.patch_size, cfg.samples)
        result = {"formats": formats, "scenes": cfg.scenes, "size": cfg.size, "synth_s_per_scene": None if synth_s is None else synth_s / cfg.scenes,
                  "prepare": rows, "loader_patches_per_s": rate, "loader_crop": cfg.patch_size,
                  "cpu_count": os.cpu_count(), "rounds": cfg.repeats, "seconds": timings.times,
                  "gdal": gdal or "gdal_translate not found (install Debian's gdal-bin): no GDAL comparison",
                  "targets": {"scheduling_efficiency": 0.9, "prepare_over_gdal": 1.5}}
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)
    Path(cfg.output).write_text(json.dumps(result, indent=2))
    return result


def _r(ratio: dict[str, float] | None) -> str:
    return f"{ratio['median']:.2f} [{ratio['q1']:.2f}-{ratio['q3']:.2f}]" if ratio else "-"


def format_table(result: dict[str, Any]) -> str:
    """The results as a plain-text table (ratios: median over interleaved rounds [quartiles])."""
    synth = result["synth_s_per_scene"]
    made = "reused from --work-dir" if synth is None else f"synth {synth:.1f} s/scene, 2 processes"
    lines = [f"prepare: {result['scenes']} generated scene(s) of {result['size']} px, RGBIR + labels ({made}); "
             f"{result['rounds']} interleaved rounds on {result['cpu_count']} cores; median s, ratios median [quartiles]",
             f"{'workers':>7} {'prepare s':>10} {'CPU bound s':>12} {'sched. eff.':>18} {'gdal s':>7} "
             f"{'prepare/gdal':>18} {'ceiling s':>10} {'ceiling/prepare':>18} {'sha256 s':>9}"]
    for r in result["prepare"]:
        bound = f"{r['cpu_bound_s']:.2f}" if r.get("cpu_bound_s") else "-"
        gdal = f"{r['gdal_s']:.2f}" if r.get("gdal_s") else "-"
        lines.append(f"{r['workers']:>7} {r['prepare_s']:>10.2f} {bound:>12} {_r(r['scheduling_efficiency']):>18} "
                     f"{gdal:>7} {_r(r.get('prepare_over_gdal')):>18} {r['ceiling_s']:>10.2f} "
                     f"{_r(r['ceiling_over_prepare']):>18} {r['sha256_s']:>9.2f}")
    lines.append("targets: scheduling efficiency (CPU bound / prepare) >= 0.9; prepare / gdal_translate <= 1.5")
    if not str(result["gdal"]).startswith("/"):
        lines.append(str(result["gdal"]))
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
