"""Training and evaluation metrics: a sink fan-out (log, Prometheus /metrics) and Pushgateway pushes.

The trainer calls `open_sink(cfg, labels)` once per rank and feeds it python floats it already has;
short steps call `push_summary`. Names, units and labels are in `cdseg.metrics.names`.
Only `cdseg.metrics.prometheus` imports prometheus_client.
"""

from __future__ import annotations

from cdseg.metrics.config import DEFAULT_PORT, MetricsConfig
from cdseg.metrics.names import ALL_METRICS, MetricSpec
from cdseg.metrics.pushgateway import delete_group, delete_groups, list_groups, push_summary
from cdseg.metrics.sinks import FanoutSink, LogSink, MetricSink, Stopwatch, open_sink

__all__ = [
    "ALL_METRICS",
    "DEFAULT_PORT",
    "FanoutSink",
    "LogSink",
    "MetricSink",
    "MetricSpec",
    "MetricsConfig",
    "Stopwatch",
    "delete_group",
    "delete_groups",
    "list_groups",
    "open_sink",
    "push_summary",
]
