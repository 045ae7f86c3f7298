"""Atomic outputs: all or nothing, with ordinary permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cdseg.utils.atomic import atomic_dir, write_text_atomic


def test_atomic_dir_commits_on_success(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("x")
        assert not target.exists()
    assert (target / "a.txt").read_text() == "x"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o777 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_atomic_dir_leaves_nothing_on_error(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("x")
        raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_replace_keeps_old_until_done(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(FileExistsError), atomic_dir(target):
        pass
    with pytest.raises(KeyboardInterrupt), atomic_dir(target, replace=True) as tmp:
        (tmp / "new.txt").write_text("new")
        raise KeyboardInterrupt
    assert (target / "old.txt").exists()
    with atomic_dir(target, replace=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_write_text_atomic(tmp_path: Path) -> None:
    path = tmp_path / "d" / "f.yaml"
    write_text_atomic(path, "a: 1\n")
    assert path.read_text() == "a: 1\n"
    assert [p.name for p in path.parent.iterdir()] == ["f.yaml"]


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_files_honour_the_umask(tmp_path: Path, umask: int) -> None:
    import torch

    from cdseg.models import ModelConfig, build_segmenter
    from cdseg.models.io import save_model

    old = os.umask(umask)
    try:
        write_text_atomic(tmp_path / "config.yaml", "a: 1\n")
        model = build_segmenter(ModelConfig(encoder="resnet18", pretrained=False, norm="bn",
                                            decoder_channels=[8, 8, 8, 8]), [3], ["R", "G", "B"])
        torch.manual_seed(0)
        save_model(model, tmp_path / "model", {"task": "6s", "step": 0})
    finally:
        os.umask(old)
    for path in (tmp_path / "config.yaml", tmp_path / "model" / "model.safetensors", tmp_path / "model" / "model.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path
    assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == 0o777 & ~umask
