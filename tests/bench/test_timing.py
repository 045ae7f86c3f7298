"""The shared bench timing helper interleaves variants round by round and takes ratios within rounds."""

from __future__ import annotations

import pytest

from cdseg.bench.timing import interleave, summarise


class FakeClock:
    """A clock that only moves when a variant says how long it took."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_variants_alternate_abcabc_after_untimed_warmup() -> None:
    calls: list[tuple[str, int]] = []
    variants = {name: (lambda r, n=name: calls.append((n, r))) for name in "ABC"}
    t = interleave(variants, rounds=3, warmup=1)
    assert [n for n, _ in calls] == list("ABC" * 4)
    assert [r for _, r in calls] == [-1] * 3 + [0] * 3 + [1] * 3 + [2] * 3
    assert t.order == [(r, n) for r in range(3) for n in "ABC"]  # warm-up calls are not timed
    assert all(len(v) == 3 for v in t.times.values())


def test_order_hook_sync_and_untimed_hooks() -> None:
    log: list[str] = []
    variants = {"up": lambda r: log.append(f"up{r}"), "down": lambda r: log.append(f"down{r}")}
    interleave(variants, rounds=2, order=lambda r: ["up", "down"] if r % 2 == 0 else ["down", "up"],
               sync=lambda: log.append("sync"), before=lambda n, r: log.append(f"<{n}"),
               after=lambda n, r: log.append(f">{n}"))
    assert log == ["<up", "sync", "up0", "sync", ">up", "<down", "sync", "down0", "sync", ">down",
                   "<down", "sync", "down1", "sync", ">down", "<up", "sync", "up1", "sync", ">up"]
    with pytest.raises(ValueError, match="expected each of"):
        interleave(variants, rounds=1, order=lambda r: ["up", "up"])


def test_ratios_are_taken_within_each_round() -> None:
    clock = FakeClock()
    load = [1.0, 5.0, 1.0, 3.0, 1.0]  # a busy machine slows whole rounds, not one variant

    cpu = FakeClock()

    def work(seconds: float):  # noqa: ANN202
        def run(r: int) -> None:
            clock.now += seconds * load[r]
            cpu.now += seconds  # the work's own CPU time does not stretch with the load
        return run

    t = interleave({"ft": work(1.0), "mib": work(1.3), "cd": work(2.4)}, rounds=5, clock=clock, cpu_clock=cpu)
    ratios = t.ratios("ft")
    assert ratios["mib"].median == pytest.approx(1.3) and ratios["mib"].spread == pytest.approx(0.0, abs=1e-9)
    assert ratios["cd"].low == pytest.approx(2.4) and ratios["cd"].high == pytest.approx(2.4)
    assert t.median("ft") == 1.0 and t.best("cd") == pytest.approx(2.4)
    # block timing of the same loads would have put the busy rounds on one method only
    d = t.as_dict("ft")
    assert d["rounds"] == 5 and d["ratios"]["cd"]["median"] == pytest.approx(2.4)
    assert t.cpu["cd"] == pytest.approx([2.4] * 5) and t.cpu_ratio("mib", "ft").median == pytest.approx(1.3)
    assert d["cpu_ratios"]["cd"]["max"] == pytest.approx(2.4)


def test_summarise_quartiles_and_spread() -> None:
    s = summarise([1.0, 2.0, 3.0, 4.0, 5.0])
    assert (s.median, s.q1, s.q3, s.low, s.high) == (3.0, 2.0, 4.0, 1.0, 5.0)
    assert s.spread == pytest.approx(2.0 / 3.0)
    assert summarise([2.0]).spread == 0.0
    with pytest.raises(ValueError):
        summarise([])
