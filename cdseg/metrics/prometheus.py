"""Prometheus export: the trainer's /metrics endpoint and Pushgateway pushes (the only prometheus_client user)."""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from cdseg.metrics import names as N
from cdseg.metrics.config import MetricsConfig
from cdseg.metrics.sinks import MetricSink
from cdseg.utils.lazy import lazy_import

prom = lazy_import("prometheus_client", "Prometheus metrics", "pip install prometheus-client")
prom.disable_created_metrics()  # no `_created` twin series: fewer series per target

log = logging.getLogger("cdseg.metrics")
_THROUGHPUT_WINDOW_S = 1.0


def build_metrics(specs: Iterable[N.MetricSpec], registry: Any) -> dict[str, Any]:
    """Create `specs` in `registry`; returns exposed name -> metric object."""
    out: dict[str, Any] = {}
    for spec in specs:
        if spec.kind == "counter":
            out[spec.name] = prom.Counter(spec.name.removesuffix("_total"), spec.help, spec.labels, registry=registry)
        elif spec.kind == "gauge":
            out[spec.name] = prom.Gauge(spec.name, spec.help, spec.labels, registry=registry)
        elif spec.kind == "histogram":
            out[spec.name] = prom.Histogram(spec.name, spec.help, spec.labels, buckets=spec.buckets, registry=registry)
        else:  # pragma: no cover - catalogue invariant
            raise AssertionError(spec.kind)
    return out


def exported_names(specs: Iterable[N.MetricSpec] = tuple(N.ALL_METRICS.values())) -> set[str]:
    """Every series name a registry built from `specs` can expose (histograms' _bucket/_sum/_count included)."""
    registry = prom.CollectorRegistry(auto_describe=True)
    build_metrics(specs, registry)
    names: set[str] = set()
    for family in registry.collect():
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + s for s in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
    return names


def _label_values(spec: N.MetricSpec, labels: Mapping[str, str], **extra: str) -> list[str]:
    merged = {**labels, **extra}
    return [merged.get(name, "") for name in spec.labels]


class PrometheusSink(MetricSink):
    """Serves the trainer's metrics on http://ADDR:PORT/metrics (port + LOCAL_RANK) until `close`."""

    def __init__(self, cfg: MetricsConfig, labels: Mapping[str, str], local_rank: int | None = None) -> None:
        self.labels = dict(labels)
        self.registry = prom.CollectorRegistry()
        self.metrics = build_metrics(N.TRAINER_METRICS, self.registry)
        self._lock = threading.Lock()
        m, lv = self.metrics, self._lv
        self._samples = m[N.TRAIN_SAMPLES.name].labels(*lv(N.TRAIN_SAMPLES))
        self._iterations = m[N.TRAIN_ITERATIONS.name].labels(*lv(N.TRAIN_ITERATIONS))
        self._epoch = m[N.TRAIN_EPOCH.name].labels(*lv(N.TRAIN_EPOCH))
        self._global_step = m[N.TRAIN_GLOBAL_STEP.name].labels(*lv(N.TRAIN_GLOBAL_STEP))
        self._lr = m[N.TRAIN_LR.name].labels(*lv(N.TRAIN_LR))
        self._throughput = m[N.TRAIN_THROUGHPUT.name].labels(*lv(N.TRAIN_THROUGHPUT))
        self._wait = m[N.TRAIN_DATA_WAIT.name].labels(*lv(N.TRAIN_DATA_WAIT))
        self._step_time = m[N.TRAIN_STEP_TIME.name].labels(*lv(N.TRAIN_STEP_TIME))
        self._children: dict[tuple[str, str, str], Any] = {}
        self._window_samples = 0
        self._window_time = 0.0
        self._first = True
        self._watch_gpu(local_rank)
        if local_rank is None:
            local_rank = int(os.environ.get("LOCAL_RANK", "0") or 0)
        self.port = cfg.port_for(local_rank)
        self.server: Any = None
        if self.port:
            try:
                self.server, _thread = prom.start_http_server(self.port, addr=cfg.resolved_addr(), registry=self.registry)
                self.port = self.server.server_address[1]
                log.debug("serving metrics on http://%s:%d/metrics", cfg.resolved_addr(), self.port)
            except OSError as exc:  # training must not die because a port is taken; say so loudly
                log.warning("cannot serve metrics on %s:%d (%s); continuing without a /metrics endpoint "
                            "(set metrics.port to a free port, or 0 to disable)", cfg.resolved_addr(), self.port, exc)
                self.port = 0

    def _lv(self, spec: N.MetricSpec, **extra: str) -> list[str]:
        return _label_values(spec, self.labels, **extra)

    def _child(self, spec: N.MetricSpec, extra_name: str, extra_value: str, split: str = "") -> Any:
        key = (spec.name, extra_value, split)
        child = self._children.get(key)
        if child is None:
            extra = {extra_name: extra_value}
            if split:
                extra["split"] = split
            child = self.metrics[spec.name].labels(*self._lv(spec, **extra))
            self._children[key] = child
        return child

    def _watch_gpu(self, local_rank: int | None) -> None:
        """GPU memory gauges read at scrape time (host-side allocator counters: no device sync)."""
        torch = sys.modules.get("torch")
        if torch is None or not torch.cuda.is_available():
            return
        device = local_rank if local_rank is not None else int(os.environ.get("LOCAL_RANK", "0") or 0)
        device = min(device, max(torch.cuda.device_count() - 1, 0))

        def reader(fn: Any) -> Any:
            return lambda: float(fn(device)) if torch.cuda.is_initialized() else 0.0

        self.metrics[N.GPU_MEMORY.name].labels(*self._lv(N.GPU_MEMORY)).set_function(reader(torch.cuda.memory_allocated))
        self.metrics[N.GPU_MEMORY_PEAK.name].labels(*self._lv(N.GPU_MEMORY_PEAK)).set_function(
            reader(torch.cuda.max_memory_allocated))

    def log(self, values: Mapping[str, float], step: int, kind: str = "train") -> None:
        if kind == "train":
            self._global_step.set(step)
        for key, value in values.items():
            name, _, sub = key.partition("/")
            value = float(value)
            if kind == "train":
                if name == "loss":
                    self._child(N.TRAIN_LOSS, "term", sub or "total").set(value)
                elif key == "lr":
                    self._lr.set(value)
                elif key == "epoch":
                    self._epoch.set(value)
                elif key == "throughput":
                    self._throughput.set(value)
                elif key in ("gpu_memory_bytes", "gpu/memory_allocated_bytes"):
                    self.metrics[N.GPU_MEMORY.name].labels(*self._lv(N.GPU_MEMORY)).set(value)
            else:
                if name == "miou" and (sub or "all") in N.SUBSETS:
                    self._child(N.EVAL_MIOU, "subset", sub or "all", kind).set(value)
                elif name == "acc" and (sub or "all") in N.SUBSETS:
                    self._child(N.EVAL_ACC, "subset", sub or "all", kind).set(value)
                elif name == "loss":
                    self._child(N.EVAL_LOSS, "term", sub or "total", kind).set(value)

    def observe_iteration(self, step_time_s: float, data_wait_s: float, samples: int) -> None:
        self._samples.inc(samples)
        self._iterations.inc()
        self._step_time.observe(step_time_s)
        self._wait.observe(data_wait_s)
        self._window_samples += samples
        self._window_time += step_time_s
        if self._first or self._window_time >= _THROUGHPUT_WINDOW_S:
            if self._window_time > 0:
                self._throughput.set(self._window_samples / self._window_time)
            self._window_samples, self._window_time, self._first = 0, 0.0, False

    def set_epoch(self, epoch: int) -> None:
        self._epoch.set(epoch)

    def close(self) -> None:
        with self._lock:
            if self.server is not None:
                self.server.shutdown()
                self.server.server_close()
                self.server = None


def summary_registry(values: Mapping[str, float], labels: Mapping[str, str], split: str = "test") -> Any:
    """A registry holding a short step's summary values, mapped onto the catalogue's names."""
    registry = prom.CollectorRegistry()
    metrics = build_metrics(N.SUMMARY_METRICS, registry)
    for key, value in values.items():
        name, _, sub = key.partition("/")
        if name == "miou" and (sub or "all") in N.SUBSETS:
            spec, extra = N.EVAL_MIOU, {"subset": sub or "all", "split": split}
        elif name == "acc" and (sub or "all") in N.SUBSETS:
            spec, extra = N.EVAL_ACC, {"subset": sub or "all", "split": split}
        elif name == "loss":
            spec, extra = N.EVAL_LOSS, {"term": sub or "total", "split": split}
        elif key == "duration_seconds":
            spec, extra = N.JOB_DURATION, {}
        else:
            spec, extra = N.JOB_VALUE, {"term": key}
        metrics[spec.name].labels(*_label_values(spec, labels, **extra)).set(float(value))
    metrics[N.JOB_LAST_SUCCESS.name].labels(*_label_values(N.JOB_LAST_SUCCESS, labels)).set_to_current_time()
    return registry


def push(gateway: str, job: str, registry: Any, grouping_key: Mapping[str, str], timeout: float) -> None:
    """PUT the registry's series as the group (job, grouping_key), replacing what the group held."""
    prom.push_to_gateway(gateway, job=job, registry=registry, grouping_key=dict(grouping_key), timeout=timeout)


def delete(gateway: str, job: str, grouping_key: Mapping[str, str], timeout: float) -> None:
    """DELETE the group (job, grouping_key) from the Pushgateway."""
    prom.delete_from_gateway(gateway, job=job, grouping_key=dict(grouping_key), timeout=timeout)
