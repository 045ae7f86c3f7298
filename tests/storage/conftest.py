"""Fixtures: moto's S3 server on loopback (real HTTP, real boto3), a fault-injecting proxy in front of it."""

from __future__ import annotations

import contextlib
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import cdseg.storage as storage
from cdseg.storage import StorageConfig

from .faultproxy import FaultProxy

BUCKET = "cdseg-test"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """URL of a moto S3 server on 127.0.0.1 (one per session)."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="session")
def proxy(moto_endpoint: str) -> Iterator[FaultProxy]:
    """The fault proxy in front of moto (one per session; faults reset per test)."""
    p = FaultProxy(int(moto_endpoint.rsplit(":", 1)[1]))
    yield p
    p.close()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake credentials, no endpoint or profile leaking in from the machine."""
    for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION",
                "AWS_DEFAULT_REGION", "CDSEG_CACHE_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def configure(endpoint: str, cache: Path, **kwargs: Any) -> StorageConfig:
    """Point cdseg.storage at `endpoint` (small multipart sizes unless overridden)."""
    settings: dict[str, Any] = {"multipart_threshold_mb": 5, "multipart_chunksize_mb": 5, "max_concurrency": 4,
                                "max_attempts": 6}
    settings.update(kwargs)
    cfg = StorageConfig(endpoint_url=endpoint, cache_dir=str(cache), **settings)
    storage.configure(cfg)
    return cfg


@pytest.fixture
def s3(aws_env: None, moto_endpoint: str, proxy: FaultProxy, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """cdseg.storage configured for moto through the proxy; yields {"root": s3://bucket/<unique>, ...}."""
    from cdseg.storage.s3 import make_client

    proxy.reset()
    cfg = configure(proxy.url, tmp_path / "cache")
    client = make_client(StorageConfig(endpoint_url=moto_endpoint))
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket=BUCKET)
    root = f"s3://{BUCKET}/{uuid.uuid4().hex[:12]}"
    yield {"root": root, "client": client, "proxy": proxy, "cfg": cfg, "cache": tmp_path / "cache",
           "endpoint": moto_endpoint}
    proxy.reset()
    storage.configure(StorageConfig())
