"""URI parsing and joining; malformed URIs are one-line `StorageError`s naming the URI."""

from __future__ import annotations

from pathlib import Path

import pytest

import cdseg.storage as storage
from cdseg.errors import UserError
from cdseg.storage.uri import Remote, local_path, parse_remote


def test_remote_and_local_are_told_apart() -> None:
    assert storage.is_remote("s3://bucket/key")
    assert storage.is_remote("minio://mlpipeline/v2/artifacts/x")
    assert not storage.is_remote("/tmp/x")
    assert not storage.is_remote("relative/dir")
    assert not storage.is_remote(Path("/tmp/x"))
    assert not storage.is_remote("file:///tmp/x")


def test_parse_remote() -> None:
    assert parse_remote("s3://bkt/a/b/") == Remote("s3", "bkt", "a/b")
    assert parse_remote("minio://mlpipeline") == Remote("minio", "mlpipeline", "")
    assert str(parse_remote("s3://bkt/a")) == "s3://bkt/a"


def test_join_keeps_the_scheme() -> None:
    assert storage.join("s3://bkt/runs", "step-0", "model/") == "s3://bkt/runs/step-0/model"
    assert storage.join("s3://bkt", "x") == "s3://bkt/x"
    assert storage.join("minio://mlpipeline/v2", "a") == "minio://mlpipeline/v2/a"
    assert storage.join("/data/out", "step-0", "model.json") == "/data/out/step-0/model.json"
    assert storage.join("file:///data", "a") == "file:///data/a"


def test_file_uris_become_paths() -> None:
    assert local_path("file:///tmp/a%20b") == Path("/tmp/a b")
    assert local_path("~/x") == Path.home() / "x"


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("gs://bucket/key", "unsupported URI scheme 'gs'"),
        ("http://host/x", "unsupported URI scheme 'http'"),
        ("s3://", "has no bucket"),
        ("s3:///key", "has no bucket"),
        ("s3://Bad_Bucket/key", "invalid bucket name"),
        ("s3://ab/key", "invalid bucket name"),
        ("s3://bkt/a//b", "empty path segment"),
        ("s3://bkt/a/../b", "'..'"),
        ("file://host/x", "must be absolute"),
    ],
)
def test_malformed_uris_are_user_errors(uri: str, says: str) -> None:
    with pytest.raises(storage.StorageError) as info:
        storage.exists(uri)
    message = str(info.value)
    assert says in message
    assert uri in message
    assert "\n" not in message
    assert isinstance(info.value, UserError)  # the CLI turns it into exit code 2
