"""Pushes from short steps (prepare, test, report, the pipeline summary) to a Pushgateway.

One group per (job, run, step): `push_summary` replaces the group (HTTP PUT), `delete_group` and
`delete_groups` remove groups a run owns, since a Pushgateway never forgets a series by itself.
With no Pushgateway configured these calls do nothing; a failed push is logged, never fatal.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from cdseg.metrics.config import MetricsConfig
from cdseg.metrics.names import ALLOWED_LABELS
from cdseg.metrics.sinks import check_labels

log = logging.getLogger("cdseg.metrics")


def _grouping(grouping_key: Mapping[str, Any]) -> dict[str, str]:
    key = {k: str(v) for k, v in grouping_key.items()}
    empty = [k for k, v in key.items() if not v]
    if empty:
        raise ValueError(f"grouping key labels {empty} are empty; give every grouping label a value")
    return key


def push_summary(
    cfg: MetricsConfig,
    job: str,
    grouping_key: Mapping[str, Any],
    values: Mapping[str, float],
    labels: Mapping[str, Any] | None = None,
    split: str = "test",
) -> bool:
    """Push a short step's values as group (job, grouping_key), e.g. {"run": "r1", "step": "1"}.

    Keys follow the sink's grammar: "miou/old", "acc/all", "loss/ce", "duration_seconds"; any other key
    becomes `cdseg_job_value{term=KEY}`. Returns True if pushed, False if no gateway or the push failed.
    """
    gateway = cfg.resolved_pushgateway()
    if gateway is None or not cfg.enabled:
        return False
    from cdseg.metrics import prometheus

    key = _grouping(grouping_key)
    metric_labels = check_labels({**(labels or {}), **{k: v for k, v in key.items() if k in ALLOWED_LABELS}})
    registry = prometheus.summary_registry(values, metric_labels, split=split)
    try:
        prometheus.push(gateway, job, registry, key, cfg.push_timeout_s)
    except (OSError, urllib.error.URLError) as exc:
        log.warning("could not push metrics of %s %s to %s (%s); continuing", job, key, gateway, exc)
        return False
    return True


def delete_group(cfg: MetricsConfig, job: str, grouping_key: Mapping[str, Any]) -> bool:
    """Delete the group (job, grouping_key); True if the gateway answered, False if none or unreachable."""
    gateway = cfg.resolved_pushgateway()
    if gateway is None:
        return False
    from cdseg.metrics import prometheus

    try:
        prometheus.delete(gateway, job, _grouping(grouping_key), cfg.push_timeout_s)
    except (OSError, urllib.error.URLError) as exc:
        log.warning("could not delete metrics group %s %s from %s (%s)", job, dict(grouping_key), gateway, exc)
        return False
    return True


def list_groups(cfg: MetricsConfig) -> list[dict[str, str]]:
    """The grouping labels (job included) of every group the Pushgateway holds."""
    gateway = cfg.resolved_pushgateway()
    if gateway is None:
        return []
    with urllib.request.urlopen(gateway + "/api/v1/metrics", timeout=cfg.push_timeout_s) as resp:  # noqa: S310
        payload = json.load(resp)
    return [dict(group.get("labels", {})) for group in payload.get("data", [])]


def delete_groups(cfg: MetricsConfig, job: str, where: Mapping[str, Any]) -> int:
    """Delete every group of `job` whose grouping labels include `where` (e.g. a run's stale steps)."""
    want = {k: str(v) for k, v in where.items()}
    try:
        groups = list_groups(cfg)
    except (OSError, urllib.error.URLError, ValueError) as exc:
        log.warning("could not list Pushgateway groups (%s)", exc)
        return 0
    deleted = 0
    for labels in groups:
        if labels.get("job") != job or any(labels.get(k) != v for k, v in want.items()):
            continue
        key = {k: v for k, v in labels.items() if k != "job"}
        deleted += bool(key) and delete_group(cfg, job, key)
    return deleted
