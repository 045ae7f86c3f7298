"""Fault sweep over a local prepared dataset: `cdseg train` and `cdseg test` on each damaged copy.

Counted: silent corruptions (exit 0 on damaged data), exits other than 0/2, multi-line errors and
outputs left behind. Every count must be 0.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio

from cdseg.cli.main import main
from cdseg.data import integrity
from train._util import cli_args, tiny_cli


def _overwrite(rel: str) -> Callable[[Path], None]:
    def fault(root: Path) -> None:
        with open(root / rel, "r+b") as handle:
            handle.seek((root / rel).stat().st_size // 2)
            handle.write(b"\x00" * 4096)
    return fault


def _truncate(root: Path) -> None:
    tile = root / "images/3_11.tif"
    tile.write_bytes(tile.read_bytes()[: tile.stat().st_size // 2])


def _smaller_valid_tiff(root: Path) -> None:
    tile = root / "labels/3_11.tif"
    with rasterio.open(tile) as src:
        profile = src.profile
    profile.update(width=32, height=32, blockxsize=16, blockysize=16)
    with rasterio.open(tile, "w", **profile) as dst:
        dst.write(np.zeros((1, 32, 32), np.uint8))


def _manifest(edit: Callable[[dict], object]) -> Callable[[Path], None]:
    def fault(root: Path) -> None:
        manifest = json.loads((root / "manifest.json").read_text())
        edit(manifest)
        (root / "manifest.json").write_text(json.dumps(manifest))
    return fault


FAULTS: dict[str, Callable[[Path], None]] = {
    "image 4 KiB overwritten": _overwrite("images/3_11.tif"),
    "label 4 KiB overwritten": _overwrite("labels/2_13.tif"),
    "image truncated": _truncate,
    "label replaced by a smaller valid TIFF": _smaller_valid_tiff,
    "image deleted": lambda root: (root / "images/2_14.tif").unlink(),
    "manifest not JSON": lambda root: (root / "manifest.json").write_text('{"format": "cdseg-prepared", "fo'),
    "manifest without patches": _manifest(lambda m: m.pop("patches")),
    "manifest without checksums": _manifest(lambda m: m.pop("checksums")),
}


def test_fault_sweep(prepared_dataset: Path, step0_run: Path, tmp_path: Path, capsys, clean_env,
                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDSEG_CACHE_DIR", str(tmp_path / "cache"))
    counts = {"runs": 0, "silent": 0, "bad exit": 0, "not one line": 0, "partial output": 0}
    problems = []
    for i, (name, fault) in enumerate(FAULTS.items()):
        ds = tmp_path / f"ds{i}"
        shutil.copytree(prepared_dataset, ds)
        fault(ds)
        for command in ("train", "test"):
            monkeypatch.setattr(integrity, "_checked", set())  # each command is a new process
            out = tmp_path / f"out-{command}-{i}"
            if command == "train":
                args = ["train", *cli_args(tiny_cli(ds, out, task__step=0))]
            else:
                args = ["test", "--checkpoint", str(step0_run / "step-0" / "model"), "--dataset", str(ds),
                        "--output", str(out), "--eval.window", "128", "--eval.overlap", "32"]
            rc = main(args)
            err = capsys.readouterr().err.strip().splitlines()
            counts["runs"] += 1
            for key, bad in (("silent", rc == 0), ("bad exit", rc not in (0, 2)), ("not one line", len(err) != 1),
                             ("partial output", out.exists())):
                if bad:
                    counts[key] += 1
                    problems.append(f"{command} / {name}: {key} (exit {rc}: {err[-1:] if err else ''})")
    print(f"fault sweep (local): {counts}")
    assert problems == [] and counts["runs"] == 2 * len(FAULTS)
