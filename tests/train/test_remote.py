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


def test_old_remote_resume_states_are_pruned(prepared_dataset: Path, bucket: dict[str, str]) -> None:
    import cdseg.storage as storage
    from cdseg.train import run_train

    common = {"storage__endpoint_url": bucket["endpoint"], "storage__cache_dir": bucket["cache"],
              "trainer__epochs": 4}
    run_train(tiny_cfg(prepared_dataset, bucket["root"], method="mib", task__step=0, **common))  # type: ignore[arg-type]
    resume = f"{bucket['root']}/step-0/resume"
    # four epochs of 2 iterations wrote it-2, it-4, it-6 and it-8; the newest two are kept, whole
    assert storage.list_dir(resume) == ["it-000000006", "it-000000008"]
    for name in storage.list_dir(resume):
        assert storage.exists(f"{resume}/{name}/state.pt")


def test_a_remote_output_has_one_owner(prepared_dataset: Path, bucket: dict[str, str], capsys) -> None:
    import os
    import time

    import cdseg.storage as storage
    from cdseg.cli.main import main
    from cdseg.train import run_train
    from train._util import cli_args, tiny_cli

    common = {"storage__endpoint_url": bucket["endpoint"], "storage__cache_dir": bucket["cache"], "trainer__epochs": 1}
    storage.configure(storage.StorageConfig(endpoint_url=bucket["endpoint"], cache_dir=bucket["cache"]))
    step = f"{bucket['root']}/step-0"
    with storage.remote_lease(step, ttl_s=60):  # another pod's run, e.g. on another node
        rc = main(["train", *cli_args(tiny_cli(prepared_dataset, bucket["root"], task__step=0, **common))])  # type: ignore[arg-type]
        err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("cdseg train:")]
        assert rc == 2 and len(err) == 1, err
        assert f"--output {step} is in use by another cdseg run" in err[0] and f"pid {os.getpid()}," in err[0]
    assert not storage.exists(f"{step}/_cdseg_lease.json")  # released
    # a crashed holder's lease expires and is taken over
    storage.write_bytes(f"{step}/_cdseg_lease.json", json.dumps({"host": "gone", "pid": 1, "started": "x",
                                                                 "expires": time.time() - 1}).encode())
    run_train(tiny_cfg(prepared_dataset, bucket["root"], method="mib", task__step=0, **common))  # type: ignore[arg-type]
    assert storage.exists(f"{step}/model") and not storage.exists(f"{step}/_cdseg_lease.json")


def test_a_remote_evaluation_has_one_owner(step0_run: Path, prepared_dataset: Path, bucket: dict[str, str], capsys,
                                           clean_env) -> None:
    import os

    import cdseg.storage as storage
    from cdseg.cli.main import main

    storage.configure(storage.StorageConfig(endpoint_url=bucket["endpoint"], cache_dir=bucket["cache"]))
    args = ["test", "--checkpoint", str(step0_run / "step-0" / "model"), "--dataset", str(prepared_dataset),
            "--output", bucket["root"], "--eval.window", "128", "--eval.overlap", "32",
            "--storage.endpoint-url", bucket["endpoint"], "--storage.cache-dir", bucket["cache"]]
    evaluation = f"{bucket['root']}/step-0/eval"
    with storage.remote_lease(evaluation):  # a `cdseg test` of another pod writing the same evaluation
        assert main(args) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("cdseg test:")]
        assert len(err) == 1 and f"--output {evaluation} is in use by another cdseg run" in err[0], err
        assert f"pid {os.getpid()}," in err[0]
        missing = [a if a != str(prepared_dataset) else str(prepared_dataset) + "-missing" for a in args]
        assert main(missing) == 2  # refused at once: before the dataset is opened (or the model built)
        assert "is in use by another cdseg run" in capsys.readouterr().err
    assert not storage.exists(evaluation)
    assert main(args) == 0
    assert storage.exists(f"{evaluation}/metrics.json") and not storage.exists(f"{evaluation}/_cdseg_lease.json")
