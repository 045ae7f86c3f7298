"""`cdseg bench train` runs end to end on a toy size and reports ratios against ft (speed is not asserted)."""

from __future__ import annotations

from cdseg.bench.train import BenchTrainConfig, format_table, run_bench_train


def test_bench_train_reports_every_method_and_flops_ratios() -> None:
    cfg = BenchTrainConfig(size=32, batch_size=2, iters=1, warmup=0, threads=1)
    result = run_bench_train(cfg)
    rows = {r["method"]: r for r in result["results"]}
    assert set(rows) == {"ft", "mib", "mib-cd", "mib-cd-2fwd"}
    assert rows["ft"]["ratio_to_ft"] == 1.0
    ft, mibcd = rows["ft"]["flops_per_step"], rows["mib-cd"]["flops_per_step"]
    # two student fwd+bwd plus one frozen forward: a bit over 2x ft's work, never more than 2.5x
    assert 2.0 < mibcd / ft < 2.5
    assert rows["mib-cd-2fwd"]["flops_per_step"] == mibcd
    assert 1.0 < rows["mib"]["flops_per_step"] / ft < 1.5
    assert "mib-cd" in format_table(result)
