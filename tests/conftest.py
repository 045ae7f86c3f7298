"""Shared fixtures: a tiny generated Potsdam release and its prepared dataset (built once per session).

- `synth_release`: Path of a generated Potsdam release in the real layout (extracted folders):
  4 training scenes (2_10, 3_10, 3_11, 3_12) and 2 test scenes (2_13, 2_14), 256x256 px, all products.
- `prepared_dataset`: Path of that release prepared with patch size 128, no overlap, RGBIR, no DSM:
  splits train 3 scenes / val 1 scene / test 2 scenes, 4 patches per scene.
Treat both as read-only; copy them (shutil.copytree) to modify.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

SYNTH_SIZE = 256
PATCH_SIZE = 128


@pytest.fixture(scope="session")
def synth_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated Potsdam release (folders), 4 train + 2 test scenes of 256 px."""
    from cdseg.data.config import SynthConfig
    from cdseg.data.synth_release import run_synth

    out = tmp_path_factory.mktemp("synth") / "potsdam"
    run_synth(SynthConfig(output=str(out), size=SYNTH_SIZE, train_scenes=4, test_scenes=2, seed=0))
    return out


@pytest.fixture(scope="session")
def prepared_dataset(synth_release: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`synth_release` prepared: 128 px patches, no overlap, RGBIR bands, 1 validation scene."""
    from cdseg.data.config import PrepareConfig
    from cdseg.data.prepare import run_prepare

    out = tmp_path_factory.mktemp("prepared") / "potsdam"
    run_prepare(PrepareConfig(input=str(synth_release), output=str(out), patch_size=PATCH_SIZE, overlap=0,
                              val_count=1, seed=0))
    return out


@pytest.fixture
def s3_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    """moto's S3 server on a free loopback port (real HTTP, real boto3); yields its endpoint URL.

    Credentials are fake, nothing leaks in from the machine's AWS set-up, and the download cache is
    private to the test. cdseg.storage is reset to its defaults afterwards.
    """
    import socket

    from moto.server import ThreadedMotoServer

    from cdseg import storage

    for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("CDSEG_CACHE_DIR", str(tmp_path / "s3-cache"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        storage.configure(storage.StorageConfig())


def make_bucket(endpoint: str, name: str) -> None:
    """Create bucket `name` on the S3 server at `endpoint`."""
    from cdseg.storage import StorageConfig
    from cdseg.storage.s3 import make_client

    make_client(StorageConfig(endpoint_url=endpoint)).create_bucket(Bucket=name)


@pytest.fixture()
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No torchrun variables leak into a single-process test; handlers `cdseg` CLI runs install are removed
    afterwards (they write to the test's captured stderr, closed once the test ends)."""
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    yield
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_cdseg", False):
            root.removeHandler(handler)
