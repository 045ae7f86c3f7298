"""An s3:// output (moto's S3 server on loopback): pieces are uploaded as they finish, step 1 reads step 0 from
the bucket, and a restarted pod with an empty work folder resumes from the bucket's newest resume state."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest

from train._util import tiny_cfg

pytestmark = pytest.mark.usefixtures("clean_env")


@pytest.fixture()
def bucket(s3_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    from conftest import make_bucket

    monkeypatch.setenv("CDSEG_WORK_DIR", str(tmp_path / "work"))
    make_bucket(s3_server, "runs")
    return {"endpoint": s3_server, "root": f"s3://runs/{uuid.uuid4().hex[:8]}", "cache": str(tmp_path / "cache")}


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
