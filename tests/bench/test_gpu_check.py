"""`cdseg bench gpu`: runs on CPU with toy settings, and its summary states GPU figures against their targets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cdseg.bench.gpu import BenchGpuConfig, SectionResult, run_bench_gpu, summarise_check


def test_gpu_check_runs_its_sections_on_cpu(tmp_path: Path) -> None:
    cfg = BenchGpuConfig(profile="tiny", sections=["env", "iabn", "eval"], output_dir=str(tmp_path), budget_s=300)
    results, summary = run_bench_gpu(cfg)
    assert [r.name for r in results] == ["env", "eval"]  # the CUDA-kernel section is for GPUs only
    assert all(r.rc == 0 for r in results), [r.tail for r in results]
    assert "torch" in (tmp_path / "env.log").read_text()
    ev = json.loads((tmp_path / "eval.json").read_text())
    assert ev["scene"] == [96, 96] and ev["tta_work_ratio"] == 8.0
    text = "\n".join(summary)
    assert "scenes/min" in text and "target <= 3x" in text and "eval rc 0" in text


def test_gpu_check_stops_at_its_budget(tmp_path: Path) -> None:
    results, _ = run_bench_gpu(BenchGpuConfig(profile="tiny", sections=["env", "eval"], output_dir=str(tmp_path),
                                              budget_s=10))
    assert results[-1].rc is None or results[-1].tail == "skipped: the budget is spent"
    with pytest.raises(ValueError, match="unknown"):
        run_bench_gpu(BenchGpuConfig(profile="tiny", sections=["nope"], output_dir=str(tmp_path)))


def _row(norm: str, method: str, step: float, mem: float, util: float | None = None) -> dict:
    return {"norm": norm, "method": method, "step_time_s": step, "ratio_to_ft": {"median": step / 0.1},
            "peak_memory_gib": mem, "utilisation": util}


def test_summary_states_gpu_figures_against_targets(tmp_path: Path) -> None:
    train = {"device": "NVIDIA H200", "results": [_row("bn", "ft", 0.1, 10.0, 0.45), _row("iabn", "ft", 0.11, 5.5),
                                                  _row("bn", "mib-cd", 0.24, 20.0), _row("iabn", "mib-cd", 0.26, 11.0)],
             "loader": {"patches_per_s_per_worker": {"median": 60.0}, "workers": 2,
                        "feed_over_consumption": {"median": 1.5}}}
    (tmp_path / "train.json").write_text(json.dumps(train))
    ddp_fail = SectionResult("ddp", 1, 3.0, "torch.distributed.DistBackendError: NCCL error: Duplicate GPU detected")
    lines = summarise_check(tmp_path, "gpu", [ddp_fail])
    text = "\n".join(lines)
    assert "45.0% (target >= 40%)" in text
    assert "ft 0.55, mib-cd 0.55 (target <= 0.6)" in text
    assert "feed 1.50x" in text and "Duplicate GPU detected" in text and "ddp rc 1" in text
