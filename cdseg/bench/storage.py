"""`cdseg bench storage`: the storage layer's S3 throughput as a ratio to plain boto3, same bytes, same run.

A checkpoint-sized file (default 500 MB) is uploaded and downloaded through `cdseg.storage`
(`upload_dir`: streamed sha256 + manifest written last; `local_dir`: verified download into the cache)
and through plain boto3 (`upload_file` / `download_file`, the same TransferConfig), alternately.
The figure of merit is boto3 time / layer time (1.0 = integrity checks cost nothing; target >= 0.9).
Without `--endpoint-url` a moto S3 server is started on loopback in its own process.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from pydantic import Field

from cdseg.bench.timing import interleave
from cdseg.config import Section
from cdseg.errors import MissingDependencyError, UserError

log = logging.getLogger(__name__)
_MB = 1000 * 1000


class BenchStorageConfig(Section):
    """Options of `cdseg bench storage`."""

    size_mb: int = Field(default=500, ge=1, description="size of the checkpoint-like object (MB, 10^6 bytes)")
    repeats: int = Field(default=1, ge=1, description="interleaved rounds (each transfer once per round; the best "
                         "and the per-round ratios are reported)")
    endpoint_url: str | None = Field(
       default=None, description="S3 endpoint to measure against (default: a moto server started on 127.0.0.1)"
    )
    bucket: str = Field(default="cdseg-bench", description="bucket to use (created if missing)")
    multipart_chunksize_mb: float = Field(default=16.0, ge=5, description="multipart part size (MiB), both sides")
    max_concurrency: int = Field(default=8, ge=1, description="parallel part transfers (threads), both sides")
    work_dir: str | None = Field(default=None, description="scratch folder (default: a temporary folder, removed after)")
    output: str = Field(default="bench-storage.json", description="JSON file for the results")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _moto_server() -> Iterator[str]:
    """A moto S3 server in a child process on 127.0.0.1 (real HTTP, like a MinIO next door)."""
    try:
        import moto.server  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError("moto", "cdseg bench storage without --endpoint-url", "pip install 'moto[server]'") from exc
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url + "/moto-api/", timeout=1).close()  # noqa: S310 - loopback
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not start on {url}") from None
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _write_random(path: Path, size: int) -> None:
    block = os.urandom(8 * 1024 * 1024)
    with open(path, "wb") as handle:
        left = size
        while left > 0:
            handle.write(block[: min(left, len(block))])
            left -= len(block)
            block = block[1:] + block[:1]  # distinct blocks, cheaply


def _flush(root: Path) -> None:
    """fsync the files under `root` (ours only: os.sync would wait for every process on the machine)."""
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process (the server is a child)
    return usage.ru_utime + usage.ru_stime


def run_bench_storage(cfg: BenchStorageConfig) -> dict[str, Any]:
    """Measure upload and download, layer vs plain boto3; return the figures (also written to `cfg.output`)."""
    import boto3  # the plain baseline; the layer's own boto3 use stays in cdseg.storage.s3
    import botocore.config

    import cdseg.storage as storage
    from cdseg.storage import StorageConfig
    from cdseg.storage.s3 import transfer_config

    added = [k for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if cfg.endpoint_url is None and k not in os.environ]
    for k in added:  # moto accepts any key; a real endpoint uses the caller's credentials
        os.environ[k] = "bench"
    work = Path(cfg.work_dir or tempfile.mkdtemp(prefix="cdseg-bench-storage-"))
    work.mkdir(parents=True, exist_ok=True)
    size = cfg.size_mb * _MB
    previous = storage.get_config()
    server = _moto_server() if cfg.endpoint_url is None else _endpoint(cfg.endpoint_url)
    try:
        with server as endpoint:
            scfg = StorageConfig(endpoint_url=endpoint, cache_dir=str(work / "cache"),
                                 multipart_chunksize_mb=cfg.multipart_chunksize_mb, max_concurrency=cfg.max_concurrency)
            storage.configure(scfg)
            # The baseline: a plain boto3 client (default retries and checksums), same TransferConfig.
            plain = boto3.session.Session().client(
                "s3", endpoint_url=endpoint, region_name=scfg.resolved_region(),
                config=botocore.config.Config(s3={"addressing_style": "path"}))
            with suppress(plain.exceptions.BucketAlreadyOwnedByYou):
                plain.create_bucket(Bucket=cfg.bucket)
            source = work / "ckpt"
            source.mkdir(exist_ok=True)
            _write_random(source / "model.safetensors", size)
            tconf = transfer_config(scfg)
            names = ("boto3_upload", "layer_upload", "boto3_download", "layer_download")
            cpu_times: dict[str, list[float]] = {k: [] for k in names}
            # Warm both sides (clients, connection pools, transfer threads) outside the timings.
            storage.write_bytes(f"s3://{cfg.bucket}/bench/warm-layer", b"warm")
            storage.read_bytes(f"s3://{cfg.bucket}/bench/warm-layer")
            plain.put_object(Bucket=cfg.bucket, Key="bench/warm-boto3", Body=b"warm")
            plain.get_object(Bucket=cfg.bucket, Key="bench/warm-boto3")["Body"].read()
            target = work / "boto3-download.bin"
            key = functools.partial("bench/boto3-{}/model.safetensors".format)
            uri = functools.partial(f"s3://{cfg.bucket}/bench/layer-{{}}".format)

            variants: dict[str, Callable[[int], Any]] = {
                "boto3_upload": lambda r: plain.upload_file(str(source / "model.safetensors"), cfg.bucket, key(r),
                                                            Config=tconf),
                "layer_upload": lambda r: storage.upload_dir(str(source), uri(r), replace=True),
                "boto3_download": lambda r: plain.download_file(cfg.bucket, key(r), str(target), Config=tconf),
                "layer_download": lambda r: storage.local_dir(uri(r)),
            }

            def cpu_timed(name: str, fn: Callable[[int], Any]) -> Callable[[int], Any]:
                def run(r: int) -> None:
                    cpu_start = _cpu()
                    fn(r)
                    cpu_times[name].append(_cpu() - cpu_start)
                return run

            variants = {k: cpu_timed(k, v) for k, v in variants.items()}

            def order(r: int) -> list[str]:
                sides = ["boto3", "layer"] if r % 2 == 0 else ["layer", "boto3"]  # no side always goes first
                return [f"{side}_{d}" for d in ("upload", "download") for side in sides]  # downloads need uploads

            def before(name: str, r: int) -> None:
                if name == "layer_download":
                    shutil.rmtree(work / "cache", ignore_errors=True)  # cold cache: it really downloads
                elif name == "boto3_download":
                    target.unlink(missing_ok=True)

            def after(name: str, r: int) -> None:
                _flush(work)  # untimed: our dirty pages must not be written back during the next timing
                if name != order(r)[-1]:
                    return
                got = storage.local_dir(uri(r)) / "model.safetensors"
                if got.stat().st_size != size or target.stat().st_size != size:
                    raise RuntimeError(f"a download has the wrong size (expected {size} bytes)")
                shutil.rmtree(work / "cache", ignore_errors=True)
                target.unlink(missing_ok=True)
                plain.delete_object(Bucket=cfg.bucket, Key=key(r))
                keys = [{"Key": f"bench/layer-{r}/{n}"} for n in ("model.safetensors", storage.MANIFEST_NAME)]
                plain.delete_objects(Bucket=cfg.bucket, Delete={"Objects": keys})

            timings = interleave(variants, cfg.repeats, order=order, before=before, after=after)
            times = timings.times
    finally:
        storage.configure(previous)
        for k in added:
            os.environ.pop(k, None)
        if cfg.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    best = {k: min(v) for k, v in times.items()}
    result = {
        "size_bytes": size,
        "repeats": cfg.repeats,
        "endpoint": "moto (loopback, child process)" if cfg.endpoint_url is None else cfg.endpoint_url,
        "chunksize_mib": cfg.multipart_chunksize_mb,
        "max_concurrency": cfg.max_concurrency,
        "cpu_count": os.cpu_count(),
        "seconds": times,
        "cpu_seconds": cpu_times,
        "pair_ratios_upload": [b / x for b, x in zip(times["boto3_upload"], times["layer_upload"], strict=True)],
        "pair_ratios_download": [b / x for b, x in zip(times["boto3_download"], times["layer_download"], strict=True)],
        "ratio_upload_rounds": timings.ratio("boto3_upload", "layer_upload").as_dict(),
        "ratio_download_rounds": timings.ratio("boto3_download", "layer_download").as_dict(),
        "mb_per_s": {k: size / _MB / v for k, v in best.items()},
        "ratio_upload": best["boto3_upload"] / best["layer_upload"],
        "ratio_download": best["boto3_download"] / best["layer_download"],
        "target_ratio": 0.9,
    }
    Path(cfg.output).parent.mkdir(parents=True, exist_ok=True)
    Path(cfg.output).write_text(json.dumps(result, indent=2) + "\n")
    return result


@contextmanager
def _endpoint(url: str) -> Iterator[str]:
    if not url.startswith(("http://", "https://")):
        raise UserError(f"--endpoint-url {url!r} must start with http:// or https://")
    yield url


def format_table(result: dict[str, Any]) -> str:
    """The figures as a small text table."""
    mbps = result["mb_per_s"]
    lines = [
        f"storage bench: {result['size_bytes'] / _MB:.0f} MB object, {result['endpoint']}, best of {result['repeats']}",
        f"{'':10} {'boto3 MB/s':>11} {'cdseg MB/s':>11} {'ratio':>6}",
        f"{'upload':10} {mbps['boto3_upload']:11.1f} {mbps['layer_upload']:11.1f} {result['ratio_upload']:6.2f}",
        f"{'download':10} {mbps['boto3_download']:11.1f} {mbps['layer_download']:11.1f} {result['ratio_download']:6.2f}",
        f"ratio = boto3 time / cdseg.storage time (streamed sha256, manifest, verified cache); target >= {result['target_ratio']}",
        "client CPU seconds (min): " + ", ".join(f"{k} {min(v):.2f}" for k, v in result["cpu_seconds"].items()),
    ]
    return "\n".join(lines)


def run_and_print(cfg: BenchStorageConfig) -> int:
    """CLI entry: run, print the table, say where the JSON went."""
    result = run_bench_storage(cfg)
    print(format_table(result))
    print(f"results: {cfg.output}")
    return 0
