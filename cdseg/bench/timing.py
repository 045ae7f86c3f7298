"""Interleaved, repeated timing shared by every `cdseg bench`: variants alternate call by call (ABCABC...).

On a machine shared with other work, timing each variant in its own block lets a burst of load land on one
variant and not another. Here every round runs each variant once, back to back, so load moves them alike;
a ratio is taken within each round (variant time / baseline time of the same round) and reported as the
median over rounds with its spread (quartiles, min, max), which says how far one number can be trusted.

Each call's CPU seconds (this process, all threads) are recorded beside its wall time. On a CPU-only run
with one compute thread they measure the work itself: other processes' load stretches wall time (bursts
shorter than a round land on single calls) but hardly the CPU time a call needs. With several intra-op
threads on an oversubscribed machine they inflate too (waiting threads spin). On a GPU the wall time
(with device synchronisation) is the figure; its CPU time is the host's.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: one variant: called with the round index (0-based; negative for warm-up rounds)
Variant = Callable[[int], Any]


@dataclass
class RatioStats:
    """A ratio measured once per round: median, quartiles and extremes."""

    median: float
    q1: float
    q3: float
    low: float
    high: float
    rounds: int

    @property
    def spread(self) -> float:
        """Interquartile range relative to the median (0.1 = the middle half of the rounds lies within 10%)."""
        return (self.q3 - self.q1) / self.median if self.median else float("inf")

    def as_dict(self) -> dict[str, float]:
        """Plain figures for the JSON output."""
        return {"median": self.median, "q1": self.q1, "q3": self.q3, "min": self.low, "max": self.high,
                "rounds": self.rounds, "spread": self.spread}

    def __str__(self) -> str:
        return f"{self.median:.2f} [{self.q1:.2f}-{self.q3:.2f}]"


def summarise(values: Sequence[float]) -> RatioStats:
    """Median, quartiles (inclusive method) and extremes of `values`."""
    if not values:
        raise ValueError("no values to summarise")
    vals = sorted(values)
    q1, _, q3 = statistics.quantiles(vals, n=4, method="inclusive") if len(vals) > 1 else (vals[0],) * 3
    return RatioStats(statistics.median(vals), q1, q3, vals[0], vals[-1], len(vals))


@dataclass
class Timings:
    """Seconds per variant (one entry per round, in round order) and the order the calls were made in."""

    times: dict[str, list[float]]
    order: list[tuple[int, str]] = field(default_factory=list)  # (round, variant) of every timed call
    cpu: dict[str, list[float]] = field(default_factory=dict)  # CPU seconds of this process per call

    def median(self, name: str) -> float:
        """Median seconds of one variant."""
        return statistics.median(self.times[name])

    def best(self, name: str) -> float:
        """Fastest call of one variant."""
        return min(self.times[name])

    def ratio(self, name: str, base: str) -> RatioStats:
        """time(name) / time(base), round by round."""
        return summarise([a / b for a, b in zip(self.times[name], self.times[base], strict=True)])

    def ratios(self, base: str) -> dict[str, RatioStats]:
        """Every variant against `base`."""
        return {name: self.ratio(name, base) for name in self.times}

    def cpu_ratio(self, name: str, base: str) -> RatioStats:
        """CPU seconds of `name` / CPU seconds of `base`, round by round."""
        return summarise([a / b for a, b in zip(self.cpu[name], self.cpu[base], strict=True)])

    def as_dict(self, base: str | None = None) -> dict[str, Any]:
        """Plain figures for the JSON output: seconds per round, medians, and ratios against `base`."""
        out: dict[str, Any] = {"rounds": len(next(iter(self.times.values()), [])),
                               "seconds": self.times, "median_s": {k: self.median(k) for k in self.times}}
        out["cpu_seconds"] = self.cpu
        if base is not None:
            out["ratio_to"] = base
            out["ratios"] = {k: v.as_dict() for k, v in self.ratios(base).items()}
            out["cpu_ratios"] = {k: self.cpu_ratio(k, base).as_dict() for k in self.cpu}
        return out


def interleave(
    variants: Mapping[str, Variant],
    rounds: int,
    *,
    warmup: int = 0,
    order: Callable[[int], Sequence[str]] | None = None,
    sync: Callable[[], None] | None = None,
    before: Callable[[str, int], None] | None = None,
    after: Callable[[str, int], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
    cpu_clock: Callable[[], float] = time.process_time,
) -> Timings:
    """Run every variant once per round, `rounds` times, after `warmup` untimed rounds; return the times.

    `order(round)` gives the variants' order in a round (default: the mapping's order every round; a
    variant may depend on an earlier one of the same round, e.g. a download on its upload). `sync` runs
    just before the clock starts and again before it stops (e.g. `torch.cuda.synchronize`, so queued
    device work is counted where it belongs); `before` / `after` run untimed around each call (reset a
    cache, read a memory peak).
    """
    if rounds < 1:
        raise ValueError(f"rounds={rounds} must be >= 1")
    names = list(variants)
    times: dict[str, list[float]] = {n: [] for n in names}
    timings = Timings(times, cpu={n: [] for n in names})
    for r in range(-warmup, rounds):
        seq = list(order(r) if order is not None else names)
        if sorted(seq) != sorted(names):
            raise ValueError(f"order({r}) gave {seq}; expected each of {names} once")
        for name in seq:
            if before is not None:
                before(name, r)
            if sync is not None:
                sync()
            start, cpu_start = clock(), cpu_clock()
            variants[name](r)
            if sync is not None:
                sync()
            elapsed, cpu = clock() - start, cpu_clock() - cpu_start
            if after is not None:
                after(name, r)
            if r >= 0:
                times[name].append(elapsed)
                timings.cpu[name].append(cpu)
                timings.order.append((r, name))
    return timings
