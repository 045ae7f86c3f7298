"""`cdseg bench train` runs end to end on a toy size and reports ratios against ft (speed is not asserted)."""

from __future__ import annotations

import math

import pytest
import torch

import cdseg.bench.train as bench_train
from cdseg.bench.timing import interleave
from cdseg.bench.train import BenchTrainConfig, format_table, run_bench_train


def test_bench_train_reports_every_method_and_flops_ratios() -> None:
    assert {"ft", "plop", "ewc", "pi", "rw", "mib-cd-2fwd"} <= set(BenchTrainConfig().methods)
    cfg = BenchTrainConfig(size=32, batch_size=2, iters=2, warmup=0, threads=1,
                           methods=["ft", "mib", "mib-cd", "mib-cd-2fwd", "plop", "rw"])
    result = run_bench_train(cfg)
    rows = {r["method"]: r for r in result["results"]}
    assert set(rows) == {"ft", "mib", "mib-cd", "mib-cd-2fwd", "plop", "rw"}
    # one frozen forward shared by POD and the pseudo-labels; the importance is elementwise work only
    assert 1.0 < rows["plop"]["flops_ratio_to_ft"] <= 1.5
    assert rows["rw"]["flops_ratio_to_ft"] <= 1.1
    assert rows["ft"]["ratio_to_ft"]["median"] == 1.0 and rows["ft"]["ratio_to_ft"]["rounds"] == 2
    # CPU seconds are measured, never compared: at this toy size the host's load decides their order
    assert rows["ft"]["cpu_ratio_to_ft"]["median"] == 1.0 and rows["mib-cd"]["cpu_s"] > 0 and rows["ft"]["cpu_s"] > 0
    ft, mibcd = rows["ft"]["flops_per_step"], rows["mib-cd"]["flops_per_step"]
    # two student fwd+bwd plus one frozen forward: a bit over 2x ft's work, never more than 2.5x
    assert 2.0 < mibcd / ft < 2.5
    assert rows["mib-cd-2fwd"]["flops_per_step"] == mibcd
    assert 1.0 < rows["mib"]["flops_per_step"] / ft < 1.5
    assert "mib-cd" in format_table(result)


def test_bench_train_interleaves_norms_and_methods_round_by_round(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[int, str]] = []

    def spy(variants, rounds, **kw):  # noqa: ANN001, ANN003, ANN202
        t = interleave(variants, rounds, **kw)
        seen.extend(t.order)
        return t

    monkeypatch.setattr(bench_train, "interleave", spy)
    cfg = BenchTrainConfig(size=32, batch_size=2, iters=3, warmup=1, threads=1, methods=["ft", "mib"],
                           norms=["bn", "iabn"], flops=False)
    result = run_bench_train(cfg)
    names = ["bn/ft", "bn/mib", "iabn/ft", "iabn/mib"]
    assert seen == [(r, n) for r in range(3) for n in names]  # ABCDABCD..., not AAA BBB
    rows = {(r["norm"], r["method"]): r for r in result["results"]}
    assert rows[("iabn", "mib")]["ratio_to_bn"]["rounds"] == 3 and "ratio_to_bn" not in rows[("bn", "mib")]
    assert len(result["seconds"]["iabn/mib"]) == 3
    assert "x bn" in format_table(result)


def test_bench_train_loader_is_timed_in_the_same_rounds(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[int, str]] = []

    def spy(variants, rounds, **kw):  # noqa: ANN001, ANN003, ANN202
        t = interleave(variants, rounds, **kw)
        seen.extend(t.order)
        return t

    monkeypatch.setattr(bench_train, "interleave", spy)
    cfg = BenchTrainConfig(size=32, batch_size=2, iters=2, warmup=0, threads=1, methods=["ft"], flops=False,
                           loader=True, loader_scene_size=96, loader_workers=3)
    result = run_bench_train(cfg)
    assert seen == [(0, "bn/ft"), (0, "loader"), (1, "bn/ft"), (1, "loader")]
    ld = result["loader"]
    ft, loader = result["seconds"]["bn/ft"], result["seconds"]["loader"]
    # 3 workers, same batch on both sides: feed / consumption = 3 x step time / loader time, round by round
    expected = sorted(3 * s / t for s, t in zip(ft, loader, strict=True))
    assert ld["feed_over_consumption"]["min"] == pytest.approx(expected[0])
    assert ld["feed_over_consumption"]["max"] == pytest.approx(expected[-1])
    assert ld["workers"] == 3 and "loader:" in format_table(result)
    # workers for 1.5x: the consumption over one worker's median rate (wall, and per CPU second of the loader)
    rate = ld["patches_per_s_per_worker"]["median"]
    assert ld["workers_for_target"] == math.ceil(1.5 * ld["consumption_images_per_s"] / rate)
    cpu_rate = ld["patches_per_cpu_s_per_worker"]["median"]
    assert ld["workers_for_target_cpu"] == math.ceil(1.5 * ld["consumption_images_per_s"] / cpu_rate)
    assert "per CPU second" in format_table(result)
    stated = run_bench_train(cfg.model_copy(update={"consume_images_per_s": 1e9, "iters": 1}))["loader"]
    assert stated["feed_over_consumption"]["median"] < 1e-3 and stated["consumption"].startswith("stated")
    assert stated["consumption_images_per_s"] == 1e9


def test_bench_train_loader_device_mode_rates_are_the_worker_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[int, str]] = []
    worker_s, device_s = [0.5, 0.25], [100.0, 200.0]  # a slow device part must not change the workers' figures

    def spy(variants, rounds, **kw):  # noqa: ANN001, ANN003, ANN202
        t = interleave(variants, rounds, **kw)
        seen.extend(t.order)
        t.times["loader-worker"], t.times["loader-device"] = list(worker_s), list(device_s)
        t.cpu["loader-worker"] = [2 * s for s in worker_s]
        return t

    monkeypatch.setattr(bench_train, "interleave", spy)
    cfg = BenchTrainConfig(size=32, batch_size=2, iters=2, warmup=0, threads=1, methods=["ft"], flops=False,
                           loader=True, loader_scene_size=96, loader_augment_on="both", consume_images_per_s=4.0)
    result = run_bench_train(cfg)
    names = ["bn/ft", "loader", "loader-worker", "loader-device"]
    assert seen == [(r, n) for r in range(2) for n in names]  # both modes in the same rounds
    ld = result["loader"]
    assert ld["augment_on"] == "loader" and set(ld["modes"]) == {"loader", "device"}  # CPU training: the loader
    dev = ld["modes"]["device"]
    # 2 patches per batch: 4 and 8 patches/s per worker (wall), 2 and 4 per CPU second; 2 workers against 4 images/s
    assert dev["patches_per_s_per_worker"]["median"] == pytest.approx(6.0)
    assert dev["patches_per_cpu_s_per_worker"]["median"] == pytest.approx(3.0)
    assert dev["feed_over_consumption"]["median"] == pytest.approx(2 * 6.0 / 4.0)
    assert dev["feed_over_consumption_cpu"] == pytest.approx(2 * 3.0 / 4.0)
    assert dev["workers_for_target"] == 1 and dev["workers_for_target_cpu"] == 2
    assert dev["device_part_s_per_batch"]["median"] == pytest.approx(150.0) and dev["device_part_on"] == "cpu"
    assert ld["modes"]["loader"]["patches_per_s_per_worker"] == ld["patches_per_s_per_worker"]
    loader = result["seconds"]["loader"]
    assert ld["loader_over_worker_part"]["max"] == pytest.approx(max(a / b for a, b in zip(loader, worker_s, strict=True)))
    text = format_table(result)
    assert "augment on device" in text and "device part 150000.0" in text and "part of the step" in text


def test_bench_train_compile_both_pairs_each_method_with_its_eager_twin(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled: list[str] = []
    # the real torch.compile takes minutes on a loaded CPU: the bench's pairing is what is tested here
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: compiled.append(type(self).__name__))
    cfg = BenchTrainConfig(size=32, batch_size=2, iters=2, warmup=0, threads=1, methods=["ft", "mib"], compile="both")
    result = run_bench_train(cfg)
    assert compiled == ["IncrementalSegmenter"] * 4  # student and teacher of the two compiled variants
    assert list(result["seconds"]) == ["bn/ft", "bn/mib", "bn/ft+compile", "bn/mib+compile"]
    rows = {(r["method"], r["compiled"]): r for r in result["results"]}
    assert rows[("mib", True)]["ratio_to_eager"]["rounds"] == 2 and "ratio_to_eager" not in rows[("mib", False)]
    assert rows[("mib", True)]["flops_per_step"] == rows[("mib", False)]["flops_per_step"] > 0
    assert rows[("ft", True)]["ratio_to_ft"]["median"] == 1.0  # compiled methods are compared with compiled ft
    assert "mib+compile" in format_table(result)
