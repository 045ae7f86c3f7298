"""The local backend: atomic files, committed folders with a manifest, nothing partial on failure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import cdseg.storage as storage
from cdseg.storage import MANIFEST_NAME


def test_file_round_trip(tmp_path: Path) -> None:
    target = storage.join(str(tmp_path), "a", "b.bin")
    storage.write_bytes(target, b"\x00\x01")
    assert storage.read_bytes(target) == b"\x00\x01"
    assert storage.exists(target)
    assert storage.local_file(target) == Path(target)
    storage.write_text("file://" + str(tmp_path / "c.txt"), "hé")
    assert storage.read_text(str(tmp_path / "c.txt")) == "hé"


def test_staged_dir_commits_with_a_manifest(tmp_path: Path) -> None:
    target = tmp_path / "ckpt"
    with storage.staged_dir(str(target)) as tmp:
        (tmp / "model.safetensors").write_bytes(b"w" * 100)
        (tmp / "sub").mkdir()
        (tmp / "sub" / "model.json").write_text("{}")
        assert not target.exists()
    manifest = json.loads((target / MANIFEST_NAME).read_text())
    assert [f["path"] for f in manifest["files"]] == ["model.safetensors", "sub/model.json"]
    assert manifest["total_bytes"] == 102
    assert storage.list_dir(str(target)) == ["model.safetensors", "sub"]
    assert storage.local_dir(str(target)) == target


def test_failed_staged_dir_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with pytest.raises(RuntimeError), storage.staged_dir(str(target)) as tmp:
        (tmp / "half.bin").write_bytes(b"x")
        raise RuntimeError("crash")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_existing_folder_needs_replace(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with storage.staged_dir(str(target)) as tmp:
        (tmp / "v").write_text("1")
    with pytest.raises(storage.StorageError, match="already exists"), storage.staged_dir(str(target)):
        pass
    with storage.staged_dir(str(target), replace=True) as tmp:
        (tmp / "v").write_text("2")
    assert (target / "v").read_text() == "2"


def test_upload_and_download_dir_locally(tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "d").mkdir(parents=True)
    (source / "d" / "x").write_bytes(b"abc")
    storage.upload_dir(str(source), str(tmp_path / "copy"))
    assert (tmp_path / "copy" / "d" / "x").read_bytes() == b"abc"
    assert (tmp_path / "copy" / MANIFEST_NAME).is_file()
    out = storage.download_dir(str(tmp_path / "copy"), str(tmp_path / "again"))
    assert (out / "d" / "x").read_bytes() == b"abc"


def test_missing_local_inputs_name_the_path(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope")
    for call in (storage.read_bytes, storage.local_file, storage.local_dir, storage.list_dir):
        with pytest.raises(storage.StorageError, match="nope"):
            call(missing)
    assert not storage.exists(missing)
