"""`cdseg bench eval` figures on a tiny scene: minimal work, TTA exactly 8x (pixels counted at the model)."""

from __future__ import annotations

from cdseg.bench.eval import BenchEvalConfig, run_bench_eval


def test_bench_eval_counts_the_minimum_work_and_8x_with_tta() -> None:
    out = run_bench_eval(BenchEvalConfig(height=100, width=70, window=32, overlap=8, model="tiny", classes=3))
    assert out["min_windows"] == 4 * 3  # ceil((100-32)/24)+1, ceil((70-32)/24)+1
    assert out["plain"]["pixels_pushed"] == out["plain"]["pixels_pushed_reported"] == 12 * 32 * 32
    assert out["plain"]["pushed_over_minimum"] == 1.0 and out["tta"]["pushed_over_minimum"] == 1.0
    assert out["tta_work_ratio"] == 8.0
    assert out["plain"]["megapixels_per_s"] > 0
