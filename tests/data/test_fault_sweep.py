"""Fault sweep of `cdseg prepare` (local): damaged releases and dangerous outputs.

Counted: silent corruptions (exit 0 on damaged input), exits other than 0/2, multi-line errors,
partial outputs (a new output or staging folder left), and existing files damaged (the release or
an existing output changed). Every count must be 0.
"""

from __future__ import annotations

import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from cdseg.cli.main import main


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _zip_release(rel: Path) -> None:
    folder = rel / "4_Ortho_RGBIR"
    with zipfile.ZipFile(rel / "4_Ortho_RGBIR.zip", "w", zipfile.ZIP_STORED) as zf:
        for tif in sorted(folder.glob("*.tif")):
            zf.write(tif, f"4_Ortho_RGBIR/{tif.name}")
    shutil.rmtree(folder)


def bad_crc(rel: Path, tmp: Path) -> Path:
    _zip_release(rel)
    z = rel / "4_Ortho_RGBIR.zip"
    with zipfile.ZipFile(z) as zf:
        info = zf.getinfo("4_Ortho_RGBIR/top_potsdam_2_13_RGBIR.tif")
    data = bytearray(z.read_bytes())
    data[info.header_offset + 30 + len(info.filename) + len(info.extra) + info.compress_size - 100] ^= 0x01
    z.write_bytes(bytes(data))
    return tmp / "out"


def truncated_zip(rel: Path, tmp: Path) -> Path:
    _zip_release(rel)
    z = rel / "4_Ortho_RGBIR.zip"
    z.write_bytes(z.read_bytes()[: z.stat().st_size // 2])
    return tmp / "out"


def unrelated_output(rel: Path, tmp: Path) -> Path:
    (tmp / "mine").mkdir()
    (tmp / "mine" / "thesis.tex").write_text("months of work")
    return tmp / "mine"


def output_is_a_file(rel: Path, tmp: Path) -> Path:
    (tmp / "file").write_text("keep")
    return tmp / "file"


FAULTS: dict[str, Callable[[Path, Path], Path]] = {
    "zip member with a bad CRC": bad_crc,
    "truncated zip": truncated_zip,
    "output is the input": lambda rel, tmp: rel,
    "output contains the input": lambda rel, tmp: tmp,
    "output inside the input": lambda rel, tmp: rel / "prepared",
    "output is an unrelated folder": unrelated_output,
    "output is a file": output_is_a_file,
    "output under a file": lambda rel, tmp: output_is_a_file(rel, tmp) / "sub",
}


@pytest.mark.parametrize("overwrite", [False, True])
def test_prepare_fault_sweep(synth_release: Path, tmp_path: Path, capsys, overwrite: bool) -> None:
    counts = {"runs": 0, "silent": 0, "bad exit": 0, "not one line": 0, "partial output": 0, "damaged existing": 0}
    problems = []
    for i, (name, fault) in enumerate(FAULTS.items()):
        tmp = tmp_path / f"case{i}"
        rel = tmp / "rel"
        shutil.copytree(synth_release, rel)
        output = fault(rel, tmp)
        before = _snapshot(tmp)
        rc = main(["prepare", "--input", str(rel), "--output", str(output), "--patch-size", "128",
                   *(["--overwrite"] if overwrite else [])])
        err = capsys.readouterr().err.strip().splitlines()
        counts["runs"] += 1
        for key, bad in (("silent", rc == 0), ("bad exit", rc not in (0, 2)), ("not one line", len(err) != 1),
                         ("partial output", sorted(p.relative_to(tmp) for p in tmp.rglob("*") if p.is_file())
                          != sorted(Path(k) for k in before)),
                         ("damaged existing", _snapshot(tmp) != before)):
            if bad:
                counts[key] += 1
                problems.append(f"{name}: {key} (exit {rc}: {err[-1:] if err else ''})")
    print(f"prepare fault sweep (local, overwrite={overwrite}): {counts}")
    assert problems == [] and counts["runs"] == len(FAULTS)
