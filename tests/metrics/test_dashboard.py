"""The Grafana dashboard queries only metric names the code defines (list derived from its registry)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cdseg.metrics.prometheus import exported_names

DASHBOARD = Path(__file__).resolve().parents[2] / "k8s" / "grafana" / "cdseg-dashboard.json"

PROMQL_WORDS = {
    # functions and aggregations
    "rate", "irate", "increase", "delta", "idelta", "deriv", "sum", "avg", "min", "max", "count", "topk", "bottomk",
    "histogram_quantile", "avg_over_time", "max_over_time", "min_over_time", "last_over_time", "sum_over_time",
    "clamp_min", "clamp_max", "abs", "time", "timestamp", "vector", "scalar", "label_replace", "quantile",
    "absent", "changes", "resets", "sort", "sort_desc", "round", "group",
    # keywords
    "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and", "or", "unless",
}
SERIES_LABELS = {"task", "step", "rank", "split", "method", "term", "subset", "le", "job", "run", "instance",
                 "namespace", "pod", "cdseg_io_run"}


def _exprs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            else:
                yield from _exprs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _exprs(item)


def _metric_names(expr: str) -> set[str]:
    """Identifiers of an expression that must be series names (labels, functions, numbers removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings (label values, regexes)
    text = re.sub(r"\$\{?\w+\}?", "", text)  # Grafana variables ($task, ${__rate_interval})
    text = re.sub(r"\{[^{}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1", text)
    words = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", text))
    return {w for w in words if w not in PROMQL_WORDS and not re.fullmatch(r"\d+(e\d+)?|Inf|NaN|[smhdwy]", w)}


def test_dashboard_is_valid_json_with_panels() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["title"] and board["uid"]
    titles = " ".join(p.get("title", "") for p in board["panels"]).lower()
    for needed in ("loss", "throughput", "miou"):
        assert needed in titles


def test_every_expr_uses_defined_metrics_only() -> None:
    board = json.loads(DASHBOARD.read_text())
    defined = exported_names()
    exprs = list(_exprs(board))
    assert len(exprs) >= 6
    used: set[str] = set()
    for expr in exprs:
        names = _metric_names(expr)
        assert names, f"no metric in {expr!r}"
        unknown = names - defined
        assert not unknown, f"{expr!r} uses {sorted(unknown)}, which cdseg does not export"
        used |= names
    for core in ("cdseg_train_loss", "cdseg_train_samples_total", "cdseg_eval_miou_ratio"):
        assert core in used


def test_label_filters_use_known_labels() -> None:
    board = json.loads(DASHBOARD.read_text())
    for expr in _exprs(board):
        for matcher in re.findall(r"\{([^{}]*)\}", re.sub(r"\$\{\w+\}", "", expr)):
            for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matcher):
                assert label in SERIES_LABELS, f"{expr!r} filters on unknown label {label!r}"


def test_scraped_series_follow_the_namespace_and_run_variables() -> None:
    # concurrent runs of one task must not be averaged together: every selector of a series scraped from the
    # trainer pods (PodMonitor's podTargetLabels add cdseg_io_run) filters on the namespace and run variables
    board = json.loads(DASHBOARD.read_text())
    names = {v["name"] for v in board["templating"]["list"]}
    assert {"namespace", "run", "task", "method", "step"} <= names
    selectors = [m for e in _exprs(board) for m in re.finditer(r"(cdseg_[a-z_]+)\{([^{}]*)\}", e)]
    scraped = [m for m in selectors if m.group(1).startswith(("cdseg_train_", "cdseg_gpu_"))]
    assert scraped
    for m in scraped:
        assert 'namespace=~"$namespace"' in m.group(2) and 'cdseg_io_run=~"$run"' in m.group(2), m.group(0)


def test_pushed_series_follow_the_run_variable() -> None:
    # pushed groups are keyed by run = the KFP run id, the value the trainer pods carry as cdseg_io_run, so the
    # run variable selects a run's pushed test results and step durations too (their namespace is the gateway's)
    board = json.loads(DASHBOARD.read_text())
    selectors = [m for e in _exprs(board) for m in re.finditer(r"(cdseg_[a-z_]+)\{([^{}]*)\}", e)]
    pushed = [m for m in selectors if m.group(1).startswith("cdseg_job_") or 'split="test"' in m.group(2)]
    assert len(pushed) >= 3
    for m in pushed:
        assert 'run=~"$run"' in m.group(2), m.group(0)


def test_the_checker_catches_a_typo() -> None:
    assert _metric_names('sum by (term) (rate(cdseg_train_los{task="$task"}[5m]))') == {"cdseg_train_los"}
    assert "cdseg_train_los" not in exported_names()


def test_variables_query_defined_metrics() -> None:
    board = json.loads(DASHBOARD.read_text())
    defined = exported_names()
    for var in board["templating"]["list"]:
        query = var.get("definition") or ""
        for metric in re.findall(r"label_values\((\w+)\s*,", query):
            assert metric in defined, f"variable {var['name']} queries {metric}, which cdseg does not export"


def dashboard_exprs() -> list[str]:
    """Every expr of the dashboard with Grafana's variables replaced, ready to send to Prometheus."""
    board = json.loads(DASHBOARD.read_text())
    out = []
    for expr in _exprs(board):
        expr = expr.replace("$__rate_interval", "5s").replace("${__rate_interval}", "5s")
        out.append(re.sub(r"\$\{?\w+\}?", ".*", expr))
    return out
