"""`cdseg bench prepare` runs end to end on small scenes (the real figures come from 6000 px runs)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

import cdseg.bench.prepare as bench_prepare
from cdseg.bench.prepare import BenchPrepareConfig, format_table, run_bench_prepare
from cdseg.bench.timing import interleave

GDAL = shutil.which("gdal_translate")


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, str]]:
    seen: list[tuple[int, str]] = []

    def spy(variants, rounds, **kw):  # noqa: ANN001, ANN003, ANN202
        t = interleave(variants, rounds, **kw)
        seen.extend(t.order)
        return t

    monkeypatch.setattr(bench_prepare, "interleave", spy)
    return seen


def test_bench_prepare_small(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _spy(monkeypatch)
    out = tmp_path / "bench.json"
    result = run_bench_prepare(BenchPrepareConfig(scenes=2, size=256, patch_size=64, samples=4, workers=[1, 2],
                                                  repeats=2, work_dir=str(tmp_path / "work"), output=str(out)))
    assert json.loads(out.read_text())["size"] == 256
    one, two = result["prepare"]
    assert (one["workers"], two["workers"]) == (1, 2)
    names = ["prepare-1", "ceiling-1"] + (["gdal-1"] if GDAL else []) + ["prepare-2", "ceiling-2"] + (["gdal-2"] if GDAL else [])
    assert seen == [(r, n) for r in range(2) for n in names]  # interleaved round by round
    for row in (one, two):
        assert row["ratio"] > 0 and row["ceiling_s"] > 0 and row["sha256_s"] > 0
        assert row["ceiling_over_prepare"]["rounds"] == 2
        assert row["output_bytes"] > 2 * 4 * 256 * 256  # two scenes of 4 bands at least
        assert row["scheduling_efficiency"]["median"] > 0 and row["cpu_bound_s"] > 0
    assert one["prepare_cpu_s"] > 0 and two["prepare_cpu_s"] is None
    assert two["cpu_bound_s"] == one["cpu_bound_s"] == pytest.approx(one["prepare_cpu_s"] / result["cpu_count"])
    assert result["loader_patches_per_s"] > 0 and {f["format"] for f in result["formats"]} >= {"per-patch .npy files"}
    table = format_table(result)
    assert "sched. eff." in table and "prepare/gdal" in table


@pytest.mark.skipif(GDAL is None, reason="gdal_translate not found (Debian package gdal-bin)")
def test_gdal_translate_writes_prepares_layout(tmp_path: Path) -> None:
    import numpy as np
    import rasterio
    import rasterio.transform

    src = tmp_path / "in.tif"
    data = np.random.default_rng(0).integers(0, 256, (3, 300, 260), dtype=np.uint8)
    geo = {"crs": "EPSG:32633", "transform": rasterio.transform.from_origin(368000, 5808000, 0.05, 0.05)}
    with rasterio.open(src, "w", driver="GTiff", count=3, height=300, width=260, dtype="uint8", **geo) as dst:
        dst.write(data)
    jobs = bench_prepare.gdal_jobs({"s": [str(src), str(src)]}, tmp_path, 128, "deflate")
    cpu = bench_prepare._gdal(jobs, 2)
    assert cpu > 0  # each child's own CPU seconds (os.wait4), summed
    with pytest.raises(subprocess.CalledProcessError):
        bench_prepare._gdal_job((str(tmp_path / "missing.tif"), str(tmp_path / "x.tif"), []))
    with rasterio.open(tmp_path / "s-image.tif") as img, rasterio.open(tmp_path / "s-label.tif") as lab:
        assert img.profile["tiled"] and img.block_shapes[0] == (128, 128) and img.interleaving.value.upper() == "BAND"
        assert img.compression.value.upper() == "DEFLATE" and np.array_equal(img.read(), data)
        assert lab.count == 1 and np.array_equal(lab.read(1), data[0])


def test_without_gdal_the_bench_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _spy(monkeypatch)
    real_which = shutil.which
    monkeypatch.setattr(bench_prepare.shutil, "which", lambda name: None if name == "gdal_translate" else real_which(name))
    result = run_bench_prepare(BenchPrepareConfig(scenes=1, size=128, patch_size=64, samples=2, workers=[1], repeats=1,
                                                  work_dir=str(tmp_path / "work"), output=str(tmp_path / "b.json")))
    assert seen == [(0, "prepare-1"), (0, "ceiling-1")]
    assert "gdal-bin" in result["gdal"] and "gdal-bin" in format_table(result)
    assert "prepare_over_gdal" not in result["prepare"][0]
