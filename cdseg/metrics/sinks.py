"""Metric sinks: the trainer's one interface, fanned out to the log and to Prometheus.

Sinks take python floats the trainer already has (no device synchronisation is added) and do
constant, microsecond-scale work per call.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

from cdseg.metrics.config import MetricsConfig
from cdseg.metrics.names import ALLOWED_LABELS

log = logging.getLogger("cdseg.metrics")


class MetricSink:
    """Receives training and validation values; every method is a no-op unless overridden."""

    def log(self, values: Mapping[str, float], step: int, kind: str = "train") -> None:
        """Record values such as {"loss/ce": 0.4, "lr": 1e-3} ("train") or {"miou/old": 0.6} ("val")."""

    def observe_iteration(self, step_time_s: float, data_wait_s: float, samples: int) -> None:
        """Record one iteration: its wall time, the part spent waiting for data, and its batch size."""

    def set_epoch(self, epoch: int) -> None:
        """Record the current epoch."""

    def set_total(self, iterations: int) -> None:
        """Record how many iterations the run has in all (for progress and remaining time)."""

    def close(self) -> None:
        """Flush and stop (the /metrics endpoint is shut down)."""

    def __enter__(self) -> MetricSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FanoutSink(MetricSink):
    """Forwards every call to each of its sinks."""

    def __init__(self, sinks: Sequence[MetricSink]) -> None:
        self.sinks = list(sinks)

    def log(self, values: Mapping[str, float], step: int, kind: str = "train") -> None:
        for sink in self.sinks:
            sink.log(values, step, kind)

    def observe_iteration(self, step_time_s: float, data_wait_s: float, samples: int) -> None:
        for sink in self.sinks:
            sink.observe_iteration(step_time_s, data_wait_s, samples)

    def set_epoch(self, epoch: int) -> None:
        for sink in self.sinks:
            sink.set_epoch(epoch)

    def set_total(self, iterations: int) -> None:
        for sink in self.sinks:
            sink.set_total(iterations)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


class LogSink(MetricSink):
    """One log line per `log` call (rank 0 only), with throughput and data wait since the previous line."""

    def __init__(self, labels: Mapping[str, Any], logger: logging.Logger | None = None) -> None:
        self.labels = dict(labels)
        self.enabled = str(self.labels.get("rank", 0)) == "0"
        self.logger = logger or log
        self.epoch: int | None = None
        self._samples = 0
        self._time = 0.0
        self._wait = 0.0

    def observe_iteration(self, step_time_s: float, data_wait_s: float, samples: int) -> None:
        self._samples += samples
        self._time += step_time_s
        self._wait += data_wait_s

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def log(self, values: Mapping[str, float], step: int, kind: str = "train") -> None:
        if not self.enabled:
            return
        parts = [f"{k}={_fmt(v)}" for k, v in values.items()]
        extra: dict[str, Any] = {"metrics": {k: float(v) for k, v in values.items()}, "kind": kind, "global_step": step}
        if kind == "train" and self._time > 0:
            rate = self._samples / self._time
            parts.append(f"{rate:.1f} img/s, data wait {100 * self._wait / self._time:.0f}%")
            extra["throughput"] = rate
            self._samples, self._time, self._wait = 0, 0.0, 0.0
        epoch = f" epoch {self.epoch}" if self.epoch is not None else ""
        self.logger.info("%s it %d%s: %s", kind, step, epoch, " ".join(parts), extra=extra)


def _fmt(value: float) -> str:
    value = float(value)
    if value == 0 or math.isnan(value) or math.isinf(value):
        return str(value)
    return f"{value:.4g}" if 1e-3 <= abs(value) < 1e5 else f"{value:.3e}"


def check_labels(labels: Mapping[str, Any]) -> dict[str, str]:
    """The labels as strings; only the low-cardinality names of DESIGN.md are allowed."""
    bad = sorted(set(labels) - ALLOWED_LABELS)
    if bad:
        raise ValueError(f"metric labels {bad} are not allowed; use only {sorted(ALLOWED_LABELS)}")
    return {k: str(v) for k, v in labels.items()}


def open_sink(cfg: MetricsConfig, labels: Mapping[str, Any]) -> MetricSink:
    """The trainer's sink: the log, a Prometheus /metrics endpoint unless disabled (port 0), and rank 0's
    progress into a TrainJob's status when its controller asks for it (`cdseg.metrics.trainer_status`)."""
    from cdseg.metrics.trainer_status import TrainerStatusSink

    clean = check_labels(labels)
    sinks: list[MetricSink] = [LogSink(clean)]
    status = TrainerStatusSink.from_env(int(clean.get("rank", "0")))
    if status is not None:
        sinks.append(status)
    if cfg.enabled and cfg.port != 0:
        from cdseg.metrics.prometheus import PrometheusSink

        sinks.append(PrometheusSink(cfg, clean))
    return FanoutSink(sinks)


class Stopwatch:
    """Measures step and data-wait time with `time.perf_counter` (host clock, no device sync)."""

    def __init__(self) -> None:
        self.last = time.perf_counter()

    def lap(self) -> float:
        """Seconds since the previous lap."""
        now = time.perf_counter()
        elapsed, self.last = now - self.last, now
        return elapsed
