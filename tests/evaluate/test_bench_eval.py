"""`cdseg bench eval` figures on a tiny scene: minimal work, TTA exactly 8x (pixels counted at the model)."""

from __future__ import annotations

import pytest

import cdseg.bench.eval as bench_eval
from cdseg.bench.eval import BenchEvalConfig, format_table, run_bench_eval
from cdseg.bench.timing import interleave


def test_bench_eval_counts_the_minimum_work_and_8x_with_tta() -> None:
    out = run_bench_eval(BenchEvalConfig(height=100, width=70, window=32, overlap=8, model="tiny", classes=3))
    assert out["min_windows"] == 4 * 3  # ceil((100-32)/24)+1, ceil((70-32)/24)+1
    assert out["plain"]["pixels_pushed"] == out["plain"]["pixels_pushed_reported"] == 12 * 32 * 32
    assert out["features"]["pixels_pushed"] == out["plain"]["pixels_pushed"]
    assert out["plain"]["pushed_over_minimum"] == 1.0 and out["tta"]["pushed_over_minimum"] == 1.0
    assert out["tta_work_ratio"] == 8.0
    assert out["plain"]["megapixels_per_s"] > 0 and out["plain"]["time_over_plain"]["median"] == 1.0
    assert out["memory"]["logits_bytes"] == 4 * 3 * 32 * 32 * 4


def test_bench_eval_interleaves_settings_and_measures_the_segmenter_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[int, str]] = []

    def spy(variants, rounds, **kw):  # noqa: ANN001, ANN003, ANN202
        t = interleave(variants, rounds, **kw)
        seen.extend(t.order)
        return t

    monkeypatch.setattr(bench_eval, "interleave", spy)
    out = run_bench_eval(BenchEvalConfig(height=160, width=128, window=128, overlap=32, model="segmenter",
                                         encoder="test_resnet", classes=5, batch_size=2, repeats=2))
    # every round runs each setting once, the order rotating so that no setting is always first
    assert seen == [(0, "plain"), (0, "features"), (0, "tta"), (1, "features"), (1, "tta"), (1, "plain")]
    mem = out["memory"]
    # the full forward also builds full-resolution decoder features: never less memory than the logits-only path
    assert mem["features"]["peak_bytes"] >= mem["plain"]["peak_bytes"] > mem["logits_bytes"]
    assert mem["tta"]["peak_bytes"] > mem["plain"]["peak_bytes"]  # + the flipped copy and the running sum
    # the banded decoder (evaluation's path) holds less than the same model run whole
    assert mem["unbanded"]["peak_bytes"] > mem["plain"]["peak_bytes"], mem
    assert "x the logits" in format_table(out) and out["features"]["time_over_plain"]["rounds"] == 2
    assert out["tta"]["cpu_time_over_plain"]["median"] > 1.0  # 8x the forward passes: more CPU work, whatever the load
