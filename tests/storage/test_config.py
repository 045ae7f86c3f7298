"""`StorageConfig`: endpoint, region and cache resolution from config and the environment."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from cdseg.storage import StorageConfig
from cdseg.storage.config import KFP_MINIO_ENDPOINT


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION", "CDSEG_CACHE_DIR"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_endpoint_precedence(clean_env: pytest.MonkeyPatch) -> None:
    assert StorageConfig().resolved_endpoint() is None  # AWS itself
    assert StorageConfig().resolved_endpoint("minio") == KFP_MINIO_ENDPOINT
    clean_env.setenv("AWS_ENDPOINT_URL", "http://generic:9000")
    assert StorageConfig().resolved_endpoint("minio") == "http://generic:9000"
    clean_env.setenv("AWS_ENDPOINT_URL_S3", "http://s3-specific:9000")
    assert StorageConfig().resolved_endpoint() == "http://s3-specific:9000"
    assert StorageConfig(endpoint_url="http://mine:9000").resolved_endpoint() == "http://mine:9000"


def test_region_precedence(clean_env: pytest.MonkeyPatch) -> None:
    assert StorageConfig().resolved_region() == "us-east-1"
    clean_env.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert StorageConfig().resolved_region() == "eu-west-1"
    clean_env.setenv("AWS_REGION", "eu-central-1")
    assert StorageConfig().resolved_region() == "eu-central-1"
    assert StorageConfig(region="ap-south-1").resolved_region() == "ap-south-1"


def test_cache_dir_precedence(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert StorageConfig().resolved_cache_dir() == Path.home() / ".cache" / "cdseg"
    clean_env.setenv("CDSEG_CACHE_DIR", str(tmp_path / "env"))
    assert StorageConfig().resolved_cache_dir() == tmp_path / "env"
    assert StorageConfig(cache_dir=str(tmp_path / "cfg")).resolved_cache_dir() == tmp_path / "cfg"


def test_endpoint_must_be_a_url() -> None:
    with pytest.raises(ValidationError, match="http://"):
        StorageConfig(endpoint_url="minio:9000")
    with pytest.raises(ValidationError):
        StorageConfig(multipart_chunksize_mb=1)  # below S3's 5 MiB minimum part size
