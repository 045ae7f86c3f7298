"""Fault sweep of `cdseg train` and `cdseg test`, local and on moto's S3 server: each on a damaged copy of a
prepared dataset, on a busy output (another run holds it), on a damaged cached object.

Counted: silent corruptions (exit 0 on damaged data), exits other than 0/2/retryable, multi-line errors,
outputs left behind, and existing outputs damaged. Every count must be 0.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio

from cdseg.cli.main import main
from cdseg.data import integrity
from cdseg.errors import EXIT_RETRYABLE
from cdseg.utils.lease import output_lease
from train._util import cli_args, tiny_cli


def _overwrite(rel: str) -> Callable[[Path], None]:
    def fault(root: Path) -> None:
        with open(root / rel, "r+b") as handle:
            handle.seek((root / rel).stat().st_size // 2)
            handle.write(b"\x00" * 4096)
    return fault


def _truncate(root: Path) -> None:
    tile = root / "images/3_11.tif"
    tile.write_bytes(tile.read_bytes()[: tile.stat().st_size // 2])


def _smaller_valid_tiff(root: Path) -> None:
    tile = root / "labels/3_11.tif"
    with rasterio.open(tile) as src:
        profile = src.profile
    profile.update(width=32, height=32, blockxsize=16, blockysize=16)
    with rasterio.open(tile, "w", **profile) as dst:
        dst.write(np.zeros((1, 32, 32), np.uint8))


def _manifest(edit: Callable[[dict], object]) -> Callable[[Path], None]:
    def fault(root: Path) -> None:
        manifest = json.loads((root / "manifest.json").read_text())
        edit(manifest)
        (root / "manifest.json").write_text(json.dumps(manifest))
    return fault


FAULTS: dict[str, Callable[[Path], None]] = {
    "image 4 KiB overwritten": _overwrite("images/3_11.tif"),
    "label 4 KiB overwritten": _overwrite("labels/2_13.tif"),
    "image truncated": _truncate,
    "label replaced by a smaller valid TIFF": _smaller_valid_tiff,
    "image deleted": lambda root: (root / "images/2_14.tif").unlink(),
    "manifest not JSON": lambda root: (root / "manifest.json").write_text('{"format": "cdseg-prepared", "fo'),
    "manifest without patches": _manifest(lambda m: m.pop("patches")),
    "manifest without checksums": _manifest(lambda m: m.pop("checksums")),
    "output held by another run": lambda root: None,
    "output held by another run, no flock": lambda root: None,
}


def _errors(stderr: str) -> list[str]:
    """The lines of stderr that are not progress (INFO log records, a local S3 server's request log)."""
    return [line for line in stderr.strip().splitlines()
            if line.strip() and not re.match(r"^\d\d:\d\d:\d\d INFO ", line)]


@contextlib.contextmanager
def _holding(name: str, output: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN202
    """Another run owns `output` (the step folder, or its evaluation) for the block, when the case says so."""
    if not name.startswith("output held"):
        yield
        return
    with monkeypatch.context() as patch:
        if name.endswith("no flock"):  # NFS without lockd: both runs fall back to the O_EXCL lock file

            def no_locks(fd: int, op: int) -> None:
                raise OSError(errno.ENOLCK, "No locks available")

            patch.setattr(fcntl, "flock", no_locks)
        with output_lease(output):
            yield


def test_fault_sweep(prepared_dataset: Path, step0_run: Path, tmp_path: Path, capsys, clean_env,
                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDSEG_CACHE_DIR", str(tmp_path / "cache"))
    counts = {"runs": 0, "silent": 0, "bad exit": 0, "not one line": 0, "partial output": 0}
    problems = []
    for i, (name, fault) in enumerate(FAULTS.items()):
        ds = tmp_path / f"ds{i}"
        shutil.copytree(prepared_dataset, ds)
        fault(ds)
        for command in ("train", "test"):
            monkeypatch.setattr(integrity, "_checked", set())  # each command is a new process
            out = tmp_path / f"out-{command}-{i}"
            if command == "train":
                args = ["train", *cli_args(tiny_cli(ds, out, task__step=0))]
            else:
                args = ["test", "--checkpoint", str(step0_run / "step-0" / "model"), "--dataset", str(ds),
                        "--output", str(out), "--eval.window", "128", "--eval.overlap", "32"]
            held = out / "step-0" / ("" if command == "train" else "eval")
            with _holding(name, held, monkeypatch):
                before = {str(p) for p in tmp_path.rglob("*") if not p.is_relative_to(tmp_path / "cache")}
                rc = main(args)
                err = _errors(capsys.readouterr().err)
                after = {str(p) for p in tmp_path.rglob("*") if not p.is_relative_to(tmp_path / "cache")}
                left = sorted(after - before)
            counts["runs"] += 1
            for key, bad in (("silent", rc == 0), ("bad exit", rc not in (0, 2, EXIT_RETRYABLE)),
                             ("not one line", len(err) != 1), ("partial output", bool(left))):
                if bad:
                    counts[key] += 1
                    problems.append(f"{command} / {name}: {key} (exit {rc}: {err[-1:] if err else ''})")
    print(f"fault sweep (local): {counts}")
    assert problems == [] and counts["runs"] == 2 * len(FAULTS)


def _flip(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1:]


S3_FAULTS = ("image object changed on S3", "image object deleted on S3", "storage manifest deleted (uncommitted)",
             "cached image bit-rotted", "output held by another run", "output bucket does not exist",
             "output with an invalid bucket name")


def test_fault_sweep_s3(prepared_dataset: Path, step0_run: Path, tmp_path: Path, capsys, clean_env, s3_server: str,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    import boto3

    import cdseg.storage as storage

    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    client.create_bucket(Bucket="sweep")
    cache = tmp_path / "cache"
    monkeypatch.setenv("CDSEG_WORK_DIR", str(tmp_path / "work"))
    common = ["--storage.endpoint-url", s3_server, "--storage.cache-dir", str(cache)]

    def objects() -> dict[str, str]:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket="sweep")
        return {o["Key"]: o["ETag"] for page in pages for o in page.get("Contents", [])}

    def local() -> set[str]:
        return {str(p) for p in tmp_path.rglob("*") if not p.is_relative_to(cache)}

    counts = {"runs": 0, "silent": 0, "bad exit": 0, "not one line": 0, "partial output": 0, "damaged existing": 0}
    problems = []
    for i, name in enumerate(S3_FAULTS):
        storage.configure(storage.StorageConfig(endpoint_url=s3_server, cache_dir=str(cache)))
        ds = f"s3://sweep/case{i}/ds"
        storage.upload_dir(prepared_dataset, ds)
        key = f"case{i}/ds/images/3_11.tif"
        rotted: Path | None = None
        if name == "image object changed on S3":
            body = client.get_object(Bucket="sweep", Key=key)["Body"].read()
            client.put_object(Bucket="sweep", Key=key, Body=_flip(body))
        elif name == "image object deleted on S3":
            client.delete_object(Bucket="sweep", Key=key)
        elif name == "storage manifest deleted (uncommitted)":
            client.delete_object(Bucket="sweep", Key=f"case{i}/ds/{storage.MANIFEST_NAME}")
        elif name == "cached image bit-rotted":
            sha = hashlib.sha256((prepared_dataset / "images" / "3_11.tif").read_bytes()).hexdigest()
            storage.local_dir(ds)  # a previous run cached it
            rotted = cache / "objects" / sha[:2] / sha
            rotted.write_bytes(_flip(rotted.read_bytes()))
        out = {"output bucket does not exist": "s3://no-such-bucket/out",
               "output with an invalid bucket name": "s3://Bad_Bucket/out"}.get(name, f"s3://sweep/case{i}/out")
        for command in ("train", "test"):
            monkeypatch.setattr(integrity, "_checked", set())  # each command is a new process
            if command == "train":
                args = ["train", *cli_args(tiny_cli(ds, out, task__step=0)), *common]  # type: ignore[arg-type]
            else:
                args = ["test", "--checkpoint", str(step0_run / "step-0" / "model"), "--dataset", ds, "--output",
                        out, "--eval.window", "128", "--eval.overlap", "32", *common]
            held = f"{out}/step-0" + ("" if command == "train" else "/eval")
            with contextlib.ExitStack() as stack:
                if name == "output held by another run":
                    stack.enter_context(storage.remote_lease(held))
                before, files_before = objects(), local()
                rc = main(args)
                err = _errors(capsys.readouterr().err)
                after, files_after = objects(), local()
            counts["runs"] += 1
            if rotted is not None:  # the damaged copy is found and fetched again: a correct run
                checks = (("silent", rc != 0 or hashlib.sha256(rotted.read_bytes()).hexdigest() != rotted.name),
                          ("damaged existing", any(after.get(k) != v for k, v in before.items())))
            else:
                checks = (("silent", rc == 0), ("bad exit", rc not in (0, 2, EXIT_RETRYABLE)),
                          ("not one line", len(err) != 1),
                          ("partial output", set(after) != set(before) or files_after != files_before),
                          ("damaged existing", after != before))
            for counter, bad in checks:
                if bad:
                    counts[counter] += 1
                    problems.append(f"{command} / {name}: {counter} (exit {rc}: {err[-1:] if err else ''})")
    print(f"fault sweep (moto S3): {counts}")
    assert problems == [] and counts["runs"] == 2 * len(S3_FAULTS)
