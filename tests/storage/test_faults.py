"""Transient faults (5xx answers, dropped connections, bodies cut off) are retried and survived."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

import cdseg.storage as storage

from .conftest import configure

MiB = 1024 * 1024


def _tree(root: Path) -> dict[str, bytes]:
    files = {"model.safetensors": os.urandom(6 * MiB), "model.json": b'{"step": 1}', "sub/a.bin": os.urandom(2048)}
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


@pytest.mark.parametrize("faults", [(503, 500), ("drop", "drop"), (500, "drop", 503, "drop")])
def test_folder_round_trip_survives_faults(s3: dict[str, Any], tmp_path: Path, faults: tuple[Any, ...]) -> None:
    files = _tree(tmp_path / "src")
    uri = storage.join(s3["root"], "ckpt")
    proxy = s3["proxy"]
    proxy.fail(*faults)
    storage.upload_dir(str(tmp_path / "src"), uri)
    assert proxy.injected == len(faults)

    shutil.rmtree(s3["cache"], ignore_errors=True)  # download everything again, through new faults
    proxy.reset()
    proxy.fail(*faults)
    local = storage.local_dir(uri)
    assert proxy.injected == len(faults)
    for rel, data in files.items():
        assert (local / rel).read_bytes() == data


def test_object_reads_survive_cut_off_bodies(s3: dict[str, Any]) -> None:
    uri = storage.join(s3["root"], "metrics.json")
    storage.write_bytes(uri, b"0123456789" * 1000)
    s3["proxy"].fail("truncate", "truncate")
    assert storage.read_bytes(uri) == b"0123456789" * 1000
    assert s3["proxy"].injected == 2


def test_large_download_survives_cut_off_parts(s3: dict[str, Any]) -> None:
    data = os.urandom(11 * MiB)
    uri = storage.join(s3["root"], "big.bin")
    storage.write_bytes(uri, data)
    s3["proxy"].fail(503, "truncate", "drop")  # HEAD or ranged GETs: each must be retried
    assert storage.local_file(uri).read_bytes() == data
    assert s3["proxy"].injected == 3


def test_write_survives_faults(s3: dict[str, Any]) -> None:
    uri = storage.join(s3["root"], "w.bin")
    s3["proxy"].fail(503, "drop", 500)
    storage.write_bytes(uri, b"payload")
    assert storage.read_bytes(uri) == b"payload"


def test_persistent_failure_is_a_readable_error(s3: dict[str, Any]) -> None:
    configure(s3["proxy"].url, s3["cache"], max_attempts=2)
    uri = storage.join(s3["root"], "x.bin")
    s3["proxy"].fail(*([500] * 10))
    with pytest.raises(storage.StorageError) as info:
        storage.write_bytes(uri, b"x")
    assert uri in str(info.value) and "InternalError" in str(info.value)
