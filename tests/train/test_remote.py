"""An s3:// output (moto's S3 server on loopback): pieces are uploaded as they finish, step 1 reads step 0 from
the bucket, and a restarted pod with an empty work folder resumes from the bucket's newest resume state."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from train._util import tiny_cfg

pytestmark = pytest.mark.usefixtures("clean_env")


@pytest.fixture()
def bucket(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[dict[str, str]]:
    from moto.server import ThreadedMotoServer

    from cdseg.storage import StorageConfig
    from cdseg.storage.s3 import make_client

    for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN", "CDSEG_CACHE_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("CDSEG_WORK_DIR", str(tmp_path / "work"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    client = make_client(StorageConfig(endpoint_url=endpoint))
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket="runs")
    yield {"endpoint": endpoint, "root": f"s3://runs/{uuid.uuid4().hex[:8]}", "cache": str(tmp_path / "cache")}
    server.stop()
    import cdseg.storage as storage

    storage.configure(StorageConfig())


def test_s3_output_chain_and_resume_from_bucket(prepared_dataset: Path, bucket: dict[str, str], tmp_path: Path) -> None:
    import cdseg.storage as storage
    from cdseg.train import run_train

    common = {"storage__endpoint_url": bucket["endpoint"], "storage__cache_dir": bucket["cache"],
              "trainer__epochs": 1}
    uri = run_train(tiny_cfg(prepared_dataset, bucket["root"], method="mib", task__step=0, **common))  # type: ignore[arg-type]
    assert uri == f"{bucket['root']}/step-0/model"
    for rel in ("model", "best"):
        assert storage.exists(f"{bucket['root']}/step-0/{rel}")
    assert json.loads(storage.read_text(f"{bucket['root']}/step-0/model/model.json"))["step"] == 0
    assert "resume" in storage.list_dir(f"{bucket['root']}/step-0")

    shutil.rmtree(tmp_path / "work")  # a new pod: nothing local
    run_train(tiny_cfg(prepared_dataset, bucket["root"], method="mib", task__step=0, **common))  # type: ignore[arg-type]
    history = json.loads(storage.read_text(f"{bucket['root']}/step-0/history.json"))
    assert len(history) == 1  # resumed as finished: no second epoch of training

    uri1 = run_train(tiny_cfg(prepared_dataset, bucket["root"], method="mib", task__step=1, **common))  # type: ignore[arg-type]
    assert json.loads(storage.read_text(f"{uri1}/model.json"))["step"] == 1
