"""A local prepared dataset is verified against its manifest's sha256 when opened for training or testing:
every file is stat'ed, and only files changed since their last verification are hashed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cdseg.data import integrity
from cdseg.data.prepared import PreparedDataset
from cdseg.errors import DataError


@pytest.fixture(autouse=True)
def new_process(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test starts like a fresh process, with its own user cache."""
    monkeypatch.setattr(integrity, "_checked", set())
    monkeypatch.setenv("CDSEG_CACHE_DIR", str(tmp_path / "cache"))


def overwrite_4k(path: Path) -> None:
    with open(path, "r+b") as handle:
        handle.seek(path.stat().st_size // 2)
        handle.write(b"\x00" * 4096)


def test_prepare_records_stamps_so_opening_hashes_nothing(prepared_dataset: Path):
    stamps = json.loads((prepared_dataset / integrity.STAMPS).read_text())
    manifest = json.loads((prepared_dataset / "manifest.json").read_text())
    assert sorted(stamps) == sorted(manifest["checksums"])
    assert PreparedDataset.open(prepared_dataset).check() == (18, 0)
    assert PreparedDataset.open(prepared_dataset).check(full=True) == (18, 18)


def test_a_copy_is_hashed_once_then_trusted_by_its_stamps(prepared_dataset: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch):
    copy = tmp_path / "copy"
    shutil.copytree(prepared_dataset, copy)  # new inodes: every stamp differs
    assert PreparedDataset.open(copy).check() == (18, 18)
    monkeypatch.setattr(integrity, "_checked", set())
    assert PreparedDataset.open(copy).check() == (18, 0)


def test_a_tile_overwritten_in_place_is_found(prepared_dataset: Path, tmp_path: Path):
    copy = tmp_path / "copy"
    shutil.copytree(prepared_dataset, copy)
    PreparedDataset.open(copy).check()
    integrity._checked.clear()
    overwrite_4k(copy / "images/2_13.tif")
    with pytest.raises(DataError, match=r"copy is damaged: images/2_13.tif \(sha256 differs\) of 18 files; run cdseg "
                                        r"prepare again with --overwrite"):
        PreparedDataset.open(copy).check()
    (copy / "labels/3_10.tif").unlink()
    with pytest.raises(DataError, match=r"labels/3_10.tif \(missing\) and 1 more of 18 files"):
        PreparedDataset.open(copy).check()


def test_stamps_of_a_read_only_dataset_go_to_the_user_cache(prepared_dataset: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch):
    copy = tmp_path / "copy"
    shutil.copytree(prepared_dataset, copy)
    real = integrity.write_text_atomic

    def read_only(path: Path, text: str) -> None:
        if Path(path).parent == copy:
            raise PermissionError(13, "Permission denied", str(path))
        real(path, text)

    monkeypatch.setattr(integrity, "write_text_atomic", read_only)
    before = (copy / integrity.STAMPS).read_bytes()
    assert PreparedDataset.open(copy).check() == (18, 18)
    assert (copy / integrity.STAMPS).read_bytes() == before
    assert list((tmp_path / "cache" / "verified").glob("*.json"))
    integrity._checked.clear()
    assert PreparedDataset.open(copy).check() == (18, 0)


def test_a_prepare_rerun_notices_a_truncated_tile(prepared_dataset: Path, synth_release: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]):
    from cdseg.cli.main import main

    out = tmp_path / "p"
    shutil.copytree(prepared_dataset, out)
    args = ["prepare", "--input", str(synth_release), "--output", str(out), "--patch-size", "128", "--overlap", "0",
            "--val-count", "1"]
    assert main(args) == 0  # up to date (the copy is hashed once and its stamps recorded)
    tile = out / "labels/3_11.tif"
    tile.write_bytes(tile.read_bytes()[:-4096])  # truncated, e.g. a copy cut short
    capsys.readouterr()
    assert main(args) == 2  # was "up to date"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "labels/3_11.tif (sha256 differs)" in err[0] and "--overwrite" in err[0]


def test_stale_stamps_in_the_cache_do_not_force_rehashing(prepared_dataset: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch):
    copy = tmp_path / "copy"
    shutil.copytree(prepared_dataset, copy)
    fallback = integrity._fallback(copy)
    fallback.parent.mkdir(parents=True)
    fallback.write_text(json.dumps({rel: ["old", 0, 0, 0, 0] for rel in json.loads((copy / "manifest.json").read_text())
                                    ["checksums"]}))  # left from when the folder was read-only
    assert PreparedDataset.open(copy).check() == (18, 18)  # the copy: hashed once, stamps beside it
    monkeypatch.setattr(integrity, "_checked", set())
    assert PreparedDataset.open(copy).check() == (18, 0)
