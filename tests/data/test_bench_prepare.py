"""`cdseg bench prepare` runs end to end on small scenes (the real figures come from 6000 px runs)."""

from __future__ import annotations

import json
from pathlib import Path

from cdseg.bench.prepare import BenchPrepareConfig, format_table, run_bench_prepare


def test_bench_prepare_small(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = run_bench_prepare(BenchPrepareConfig(scenes=2, size=256, patch_size=64, samples=4, workers=[1, 2],
                                                  work_dir=str(tmp_path / "work"), output=str(out)))
    assert json.loads(out.read_text())["size"] == 256
    one, two = result["prepare"]
    assert (one["workers"], two["workers"]) == (1, 2)
    for row in (one, two):
        assert row["ratio"] > 0 and row["ceiling_s"] > 0 and row["sha256_s"] > 0
        assert row["output_bytes"] > 2 * 4 * 256 * 256  # two scenes of 4 bands at least
    assert one["prepare_cpu_s"] > 0 and one["cpu_bound_ratio"] > 0 and two["prepare_cpu_s"] is None
    assert result["loader_patches_per_s"] > 0 and {f["format"] for f in result["formats"]} >= {"per-patch .npy files"}
    table = format_table(result)
    assert "CPU-s" in table and "sha256" in table and "ratio" in table
