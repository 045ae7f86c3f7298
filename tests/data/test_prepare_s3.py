"""`cdseg prepare` from and to s3:// (moto's S3 server on loopback, real boto3): a release uploaded by hand
in, a committed prepared dataset out, opened again through cdseg.storage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("moto")
storage = pytest.importorskip("cdseg.storage")

BUCKET = "cdseg-data-test"


@pytest.fixture
def s3_endpoint(s3_server: str) -> str:
    return s3_server


def test_prepare_from_and_to_s3(s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import tempfile

    import boto3

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the linked view of the raw release goes here

    from cdseg.cli.main import main
    from cdseg.data.prepared import PreparedDataset

    rel = tmp_path / "rel"
    assert main(["synth", "--output", str(rel), "--size", "64", "--train-scenes", "2", "--test-scenes", "1",
                 "--products", "RGBIR,labels"]) == 0
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    for path in rel.rglob("*.tif"):  # uploaded by hand: no cdseg storage manifest
        client.upload_file(str(path), BUCKET, f"raw/{path.relative_to(rel).as_posix()}")
    common = ["--storage.endpoint-url", s3_endpoint, "--storage.cache-dir", str(tmp_path / "cache")]
    out = f"s3://{BUCKET}/prepared"
    assert main(["prepare", "--input", f"s3://{BUCKET}/raw", "--output", out, "--patch-size", "32", *common]) == 0
    storage.configure(storage.StorageConfig(endpoint_url=s3_endpoint, cache_dir=str(tmp_path / "cache")))
    ds = PreparedDataset.open(out)
    assert ds.scenes("test") == ["2_13"]
    image, label = ds.read_patch(ds.patches("test")[0])
    assert image.shape == (4, 32, 32) and label.dtype == np.uint8
    assert main(["prepare", "--input", str(rel), "--output", str(tmp_path / "p"), "--patch-size", "32"]) == 0
    local = PreparedDataset.open(tmp_path / "p")
    assert local.manifest["checksums"] == ds.manifest["checksums"]
    # a rerun finds the same fingerprint: nothing is rewritten
    assert main(["prepare", "--input", f"s3://{BUCKET}/raw", "--output", out, "--patch-size", "32", *common]) == 0
    # --verify on an s3 output: the objects come through the (checksummed) cache and match the manifest
    assert main(["prepare", "--input", f"s3://{BUCKET}/raw", "--output", out, "--patch-size", "32", "--verify",
                 *common]) == 0


def test_an_s3_output_has_one_owner(s3_endpoint: str, synth_release: Path, tmp_path: Path, capsys) -> None:
    import json
    import os
    import time

    import boto3

    from cdseg.cli.main import main

    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=BUCKET)
    storage.configure(storage.StorageConfig(endpoint_url=s3_endpoint, cache_dir=str(tmp_path / "cache")))
    out = f"s3://{BUCKET}/owned"
    args = ["prepare", "--input", str(synth_release), "--output", out, "--patch-size", "128",
            "--storage.endpoint-url", s3_endpoint, "--storage.cache-dir", str(tmp_path / "cache")]
    with storage.remote_lease(out):  # a prepare running elsewhere (another pod) on the same prefix
        assert main(args) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("cdseg prepare:")]
        assert len(err) == 1 and f"--output {out} is in use by another cdseg run" in err[0], err
        assert f"pid {os.getpid()}, started " in err[0]
    assert not storage.exists(out)  # nothing committed by the refused run
    # a crashed holder's lease expires and is taken over
    storage.write_bytes(f"{out}/_cdseg_lease.json",
                        json.dumps({"host": "gone", "pid": 1, "started": "x", "expires": time.time() - 1}).encode())
    assert main(args) == 0
    assert storage.exists(f"{out}/manifest.json") and not storage.exists(f"{out}/_cdseg_lease.json")
