"""`cdseg train` and `cdseg test` refuse a prepared dataset whose files differ from the manifest's sha256."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cdseg.cli.main import main
from cdseg.data import integrity
from train._util import cli_args, tiny_cli


@pytest.fixture
def damaged(prepared_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the prepared dataset, verified once, then with 4 KiB of one tile overwritten in place."""
    monkeypatch.setattr(integrity, "_checked", set())
    monkeypatch.setenv("CDSEG_CACHE_DIR", str(tmp_path / "cache"))
    copy = tmp_path / "ds"
    shutil.copytree(prepared_dataset, copy)
    integrity.verify_dataset(copy, json.loads((copy / "manifest.json").read_text())["checksums"], "x")
    integrity._checked.clear()  # the next open is a new run
    tile = copy / "images/3_11.tif"
    with open(tile, "r+b") as handle:
        handle.seek(tile.stat().st_size // 2)
        handle.write(b"\x00" * 4096)
    return copy


def one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_train_refuses_a_damaged_dataset(damaged: Path, tmp_path: Path, capsys, clean_env) -> None:
    assert main(["train", *cli_args(tiny_cli(damaged, tmp_path / "run", task__step=0))]) == 2
    err = one_line(capsys)
    assert "images/3_11.tif (sha256 differs) of 18 files" in err and "--overwrite" in err
    assert not (tmp_path / "run").exists()


def test_test_refuses_a_damaged_dataset(damaged: Path, step0_run: Path, tmp_path: Path, capsys, clean_env) -> None:
    rc = main(["test", "--checkpoint", str(step0_run / "step-0" / "model"), "--dataset", str(damaged),
               "--output", str(tmp_path / "eval"), "--eval.window", "128", "--eval.overlap", "32"])
    assert rc == 2
    assert "images/3_11.tif (sha256 differs)" in one_line(capsys)
    assert not (tmp_path / "eval").exists()


def test_verify_hashes_every_file(prepared_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cdseg.data.prepared import PreparedDataset

    monkeypatch.setattr(integrity, "_checked", set())
    calls: list[str] = []
    real = integrity.sha256_file
    monkeypatch.setattr(integrity, "sha256_file", lambda p: calls.append(str(p)) or real(p))
    PreparedDataset.open(prepared_dataset).check()
    assert calls == []  # stamps recorded by prepare: nothing hashed
    PreparedDataset.open(prepared_dataset).check(full=True)
    assert len(calls) == 18  # 6 scenes: image, label, eroded label


def test_a_tile_damaged_behind_the_stamps_is_one_line(prepared_dataset: Path, tmp_path: Path, capsys, clean_env,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Damage the stamps cannot see (bit rot keeps size and times): the read itself fails, in one line naming the
    file, also from a DataLoader worker process."""
    monkeypatch.setattr(integrity, "_checked", set())
    copy = tmp_path / "ds"
    shutil.copytree(prepared_dataset, copy)
    checksums = json.loads((copy / "manifest.json").read_text())["checksums"]
    for scene in ("2_10", "3_10", "3_11", "3_12"):
        tile = copy / f"images/{scene}.tif"
        tile.write_bytes(tile.read_bytes()[:1024])  # header kept, every pixel block cut off
    integrity.write_stamps(copy, checksums)  # the stamps say "verified": only the reads can tell
    rc = main(["train", *cli_args(tiny_cli(copy, tmp_path / "run", task__step=0, data__workers=1))])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("cdseg train:")]
    assert rc == 2 and len(errors) == 1, errors  # (the INFO lines of the run that started are not errors)
    assert "images/" in errors[0] and "cannot be read" in errors[0] and "--overwrite" in errors[0], errors
