"""A step's output has one owner: a second `cdseg train` on it is refused at once; a killed run's
temporaries are removed by the next one; a rerun with other settings does not mix into it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cdseg.cli.main import main
from cdseg.utils.lease import output_lease
from train._util import cli_args, tiny_cli


def test_a_second_run_on_the_same_output_is_refused(prepared_dataset: Path, tmp_path: Path, capsys, clean_env) -> None:
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from cdseg.utils.lease import output_lease\n"
         "with output_lease(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(60)", str(run / "step-0")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        rc = main(["train", *cli_args(tiny_cli(prepared_dataset, run, task__step=0, optimizer__lr=0.01))])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1, err
        assert f"--output {run / 'step-0'} is in use by another cdseg run" in err[0] and f"pid {holder.pid}," in err[0]
        assert not (run / "step-0").exists()
    finally:
        holder.kill()
        holder.wait()


def test_killed_runs_temporaries_are_removed(prepared_dataset: Path, tmp_path: Path, clean_env) -> None:
    step = tmp_path / "run" / "step-0"
    stale = [step / ".best.tmp-a1", step / ".model.tmp-b2", step / ".model.old-c3"]
    for folder in stale:
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"\0" * 1024)
    (step / ".history.json.tmp-d4").write_text("[")
    (step / ".eval.tmp-e5").mkdir()  # `cdseg test`'s, under its own lease: not train's to remove
    assert main(["train", *cli_args(tiny_cli(prepared_dataset, tmp_path / "run", task__step=0))]) == 0
    assert sorted(p.name for p in step.iterdir() if p.name.startswith(".")) == [".eval.tmp-e5"]
    assert (step / "model" / "model.safetensors").is_file()
    assert sorted(p.name for p in step.parent.iterdir()) == ["step-0"]  # no lock file left


def test_the_lease_is_released_after_a_run(prepared_dataset: Path, tmp_path: Path, clean_env) -> None:
    run = tmp_path / "run"
    assert main(["train", *cli_args(tiny_cli(prepared_dataset, run, task__step=0))]) == 0
    with output_lease(run / "step-0"):
        pass


def test_a_rerun_with_other_settings_is_refused(step0_run: Path, prepared_dataset: Path, tmp_path: Path, capsys,
                                                clean_env) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(step0_run, run)
    before = {p: p.read_bytes() for p in sorted((run / "step-0").rglob("*")) if p.is_file()}
    rc = main(["train", *cli_args(tiny_cli(prepared_dataset, run, method="mib", task__step=0, optimizer__lr=0.5))])
    assert rc == 2
    assert "--optimizer.lr" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in sorted((run / "step-0").rglob("*")) if p.is_file()} == before


def test_history_is_strict_json(step0_run: Path) -> None:
    import json

    def reject(constant: str) -> None:
        raise AssertionError(f"history.json holds {constant}, which is not JSON")

    history = json.loads((step0_run / "step-0" / "history.json").read_text(), parse_constant=reject)
    assert all(r["val_miou_old"] is None for r in history)  # step 0 has no old classes: null, not NaN


@pytest.mark.parametrize(("output", "message"), [("s3://Bad_Bucket/run", "invalid bucket name 'Bad_Bucket'"),
                                                 ("gs://bucket/run", "unsupported URI scheme 'gs'")])
def test_a_bad_output_uri_is_refused_before_anything_is_loaded(tmp_path: Path, capsys, clean_env, monkeypatch,
                                                               output: str, message: str) -> None:
    monkeypatch.setenv("CDSEG_WORK_DIR", str(tmp_path / "work"))
    # the dataset does not exist either: the output URI must be the first thing checked
    assert main(["train", *cli_args(tiny_cli(tmp_path / "no-dataset", output, task__step=0))]) == 2  # type: ignore[arg-type]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "work").exists()


def test_a_second_test_run_on_the_same_evaluation_is_refused(step0_run: Path, prepared_dataset: Path, tmp_path: Path,
                                                             capsys, clean_env) -> None:
    args = ["test", "--checkpoint", str(step0_run / "step-0" / "model"), "--dataset", str(prepared_dataset),
            "--output", str(tmp_path / "run"), "--eval.window", "128", "--eval.overlap", "32"]
    with output_lease(tmp_path / "run" / "step-0" / "eval"):
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is in use by another cdseg run" in err[0], err
    (tmp_path / "run" / "step-0" / ".eval.tmp-abc").mkdir(parents=True)  # left by a killed run
    assert main(args) == 0
    assert sorted(p.name for p in (tmp_path / "run" / "step-0").iterdir()) == ["eval"]


def test_test_overwrite_replaces_only_an_evaluation(step0_run: Path, prepared_dataset: Path, tmp_path: Path,
                                                    capsys, clean_env) -> None:
    eval_dir = tmp_path / "run" / "step-0" / "eval"
    eval_dir.mkdir(parents=True)
    (eval_dir / "notes.txt").write_text("mine")
    args = ["test", "--checkpoint", str(step0_run / "step-0" / "model"), "--dataset", str(prepared_dataset),
            "--output", str(tmp_path / "run"), "--eval.window", "128", "--eval.overlap", "32", "--overwrite"]
    assert main(args) == 2
    assert "not a cdseg evaluation" in capsys.readouterr().err
    assert (eval_dir / "notes.txt").read_text() == "mine"
