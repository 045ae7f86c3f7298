"""Fault sweep of `cdseg prepare`, local and on moto's S3 server: damaged releases and dangerous or busy outputs.

Counted: silent corruptions (exit 0 on damaged input), exits other than 0/2/retryable, multi-line errors,
partial outputs (a new output, staging folder or object left), and existing files damaged (the release or
an existing output changed). Every count must be 0.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import shutil
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cdseg.cli.main import main
from cdseg.errors import EXIT_RETRYABLE
from cdseg.utils.lease import output_lease


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _paths(root: Path) -> set[str]:
    """Every file and folder under `root` (an empty folder left behind is a partial output too)."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _zip_release(rel: Path) -> None:
    folder = rel / "4_Ortho_RGBIR"
    with zipfile.ZipFile(rel / "4_Ortho_RGBIR.zip", "w", zipfile.ZIP_STORED) as zf:
        for tif in sorted(folder.glob("*.tif")):
            zf.write(tif, f"4_Ortho_RGBIR/{tif.name}")
    shutil.rmtree(folder)


def bad_crc(rel: Path, tmp: Path) -> Path:
    _zip_release(rel)
    z = rel / "4_Ortho_RGBIR.zip"
    with zipfile.ZipFile(z) as zf:
        info = zf.getinfo("4_Ortho_RGBIR/top_potsdam_2_13_RGBIR.tif")
    data = bytearray(z.read_bytes())
    data[info.header_offset + 30 + len(info.filename) + len(info.extra) + info.compress_size - 100] ^= 0x01
    z.write_bytes(bytes(data))
    return tmp / "out"


def truncated_zip(rel: Path, tmp: Path) -> Path:
    _zip_release(rel)
    z = rel / "4_Ortho_RGBIR.zip"
    z.write_bytes(z.read_bytes()[: z.stat().st_size // 2])
    return tmp / "out"


def unrelated_output(rel: Path, tmp: Path) -> Path:
    (tmp / "mine").mkdir()
    (tmp / "mine" / "thesis.tex").write_text("months of work")
    return tmp / "mine"


def output_is_a_file(rel: Path, tmp: Path) -> Path:
    (tmp / "file").write_text("keep")
    return tmp / "file"


def held(rel: Path, tmp: Path) -> Path:
    """An output another run owns (its lock is taken before the run; see `_holding`)."""
    return tmp / "held"


def held_without_flock(rel: Path, tmp: Path) -> Path:
    """An output another run owns on a filesystem without flock (NFS without lockd): the lock-file fallback."""
    return tmp / "held-nolock"


@contextlib.contextmanager
def _holding(output: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    if output.name not in ("held", "held-nolock"):
        yield
        return
    with monkeypatch.context() as patch:
        if output.name == "held-nolock":

            def no_locks(fd: int, op: int) -> None:
                raise OSError(errno.ENOLCK, "No locks available")

            patch.setattr(fcntl, "flock", no_locks)
        with output_lease(output):
            yield


FAULTS: dict[str, Callable[[Path, Path], Path]] = {
    "zip member with a bad CRC": bad_crc,
    "truncated zip": truncated_zip,
    "output is the input": lambda rel, tmp: rel,
    "output contains the input": lambda rel, tmp: tmp,
    "output inside the input": lambda rel, tmp: rel / "prepared",
    "output is an unrelated folder": unrelated_output,
    "output is a file": output_is_a_file,
    "output under a file": lambda rel, tmp: output_is_a_file(rel, tmp) / "sub",
    "output held by another run": held,
    "output held by another run, no flock": held_without_flock,
}


@pytest.mark.parametrize("overwrite", [False, True])
def test_prepare_fault_sweep(synth_release: Path, tmp_path: Path, capsys, overwrite: bool,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    counts = {"runs": 0, "silent": 0, "bad exit": 0, "not one line": 0, "partial output": 0, "damaged existing": 0}
    problems = []
    for i, (name, fault) in enumerate(FAULTS.items()):
        tmp = tmp_path / f"case{i}"
        rel = tmp / "rel"
        shutil.copytree(synth_release, rel)
        output = fault(rel, tmp)
        with _holding(output, monkeypatch):
            before, paths_before = _snapshot(tmp), _paths(tmp)
            rc = main(["prepare", "--input", str(rel), "--output", str(output), "--patch-size", "128",
                       *(["--overwrite"] if overwrite else [])])
            err = capsys.readouterr().err.strip().splitlines()
            after = _snapshot(tmp)  # while a holder's lock file is still there
            paths_after = _paths(tmp)
        counts["runs"] += 1
        for key, bad in (("silent", rc == 0), ("bad exit", rc not in (0, 2, EXIT_RETRYABLE)),
                         ("not one line", len(err) != 1), ("partial output", paths_after != paths_before),
                         ("damaged existing", after != before)):
            if bad:
                counts[key] += 1
                problems.append(f"{name}: {key} (exit {rc}: {err[-1:] if err else ''})")
    print(f"prepare fault sweep (local, overwrite={overwrite}): {counts}")
    assert problems == [] and counts["runs"] == len(FAULTS)


S3_FAULTS: dict[str, Callable[[Path, Path], str]] = {  # (local copy of the release, tmp) -> the --output URI
    "zip member with a bad CRC": lambda rel, tmp: (bad_crc(rel, tmp), "s3://sweep/{case}/out")[1],
    "truncated zip": lambda rel, tmp: (truncated_zip(rel, tmp), "s3://sweep/{case}/out")[1],
    "output is the input": lambda rel, tmp: "s3://sweep/{case}/rel",
    "output contains the input": lambda rel, tmp: "s3://sweep/{case}",
    "output inside the input": lambda rel, tmp: "s3://sweep/{case}/rel/prepared",
    "output prefix holds unrelated objects": lambda rel, tmp: "s3://sweep/{case}/mine",
    "output held by another run": lambda rel, tmp: "s3://sweep/{case}/held",
    "output in a bucket that does not exist": lambda rel, tmp: "s3://no-such-bucket/{case}/out",
    "output with an invalid bucket name": lambda rel, tmp: "s3://Bad_Bucket/{case}/out",
}


@pytest.mark.parametrize("overwrite", [False, True])
def test_prepare_fault_sweep_s3(synth_release: Path, tmp_path: Path, capsys, overwrite: bool, s3_server: str) -> None:
    import boto3

    import cdseg.storage as storage

    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    client.create_bucket(Bucket="sweep")
    storage.configure(storage.StorageConfig(endpoint_url=s3_server, cache_dir=str(tmp_path / "cache")))
    common = ["--storage.endpoint-url", s3_server, "--storage.cache-dir", str(tmp_path / "cache")]

    def objects() -> dict[str, str]:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket="sweep")
        return {o["Key"]: o["ETag"] for page in pages for o in page.get("Contents", [])}

    counts = {"runs": 0, "silent": 0, "bad exit": 0, "not one line": 0, "partial output": 0, "damaged existing": 0}
    problems = []
    for i, (name, fault) in enumerate(S3_FAULTS.items()):
        case, tmp = f"case{i}", tmp_path / f"case{i}"
        rel = tmp / "rel"
        shutil.copytree(synth_release, rel)
        output = fault(rel, tmp).format(case=case)
        for path in sorted(p for p in rel.rglob("*") if p.is_file()):  # uploaded by hand: a plain prefix
            client.upload_file(str(path), "sweep", f"{case}/rel/{path.relative_to(rel).as_posix()}")
        client.put_object(Bucket="sweep", Key=f"{case}/mine/thesis.tex", Body=b"months of work")
        with contextlib.ExitStack() as stack:
            if output.endswith("/held"):
                stack.enter_context(storage.remote_lease(output))
            before = objects()
            rc = main(["prepare", "--input", f"s3://sweep/{case}/rel", "--output", output, "--patch-size", "128",
                       *common, *(["--overwrite"] if overwrite else [])])
            err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("cdseg prepare:")]
            after = objects()
        counts["runs"] += 1
        for key, bad in (("silent", rc == 0), ("bad exit", rc not in (0, 2, EXIT_RETRYABLE)),
                         ("not one line", len(err) != 1), ("partial output", set(after) != set(before)),
                         ("damaged existing", after != before)):
            if bad:
                counts[key] += 1
                problems.append(f"{name}: {key} (exit {rc}: {err[-1:] if err else ''})")
    print(f"prepare fault sweep (moto S3, overwrite={overwrite}): {counts}")
    assert problems == [] and counts["runs"] == len(S3_FAULTS)
