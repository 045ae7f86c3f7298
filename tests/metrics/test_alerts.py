"""The shipped PrometheusRule (k8s/components/alerts): valid rules (`promtool check rules`), only metric names
cdseg exports, and alerts that fire when they should and only then (`promtool test rules` on scripted series)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from cdseg.metrics.prometheus import exported_names

from .conftest import need_binary
from .test_dashboard import _metric_names

RULE = Path(__file__).resolve().parents[2] / "k8s" / "components" / "alerts" / "prometheusrule.yaml"
#: series of kube-state-metrics the pending alert joins
KUBE_STATE = {"kube_pod_status_phase", "kube_pod_labels"}
L = {"namespace": "ns", "pod": "p", "task": "222a", "step": "1", "method": "mib"}


def _groups() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULE.read_text())
    assert doc["kind"] == "PrometheusRule" and doc["metadata"]["labels"]["release"]
    return list(doc["spec"]["groups"])


def _rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": _groups()}, sort_keys=False))
    return path


def _series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    body = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{body}}}", "values": values}


def test_rules_are_valid(tmp_path: Path) -> None:
    out = subprocess.run([need_binary("promtool"), "check", "rules", str(_rules_file(tmp_path))],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "3 rules found" in out.stdout


def test_rules_use_exported_metrics_only() -> None:
    defined = exported_names() | KUBE_STATE
    for rule in (r for g in _groups() for r in g["rules"]):
        expr = re.sub(r"\+Inf\b", "", rule["expr"])
        names = _metric_names(expr)
        assert names and names <= defined, f"{rule['alert']} uses {sorted(names - defined)}"


def test_alerts_fire_when_they_should_and_only_then(tmp_path: Path) -> None:
    rank = {**L, "rank": "0"}
    stuck = {**L, "pod": "q", "method": "ft", "rank": "0"}
    tests = {
        "rule_files": [str(_rules_file(tmp_path))],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [
                _series("cdseg_train_loss", {**rank, "term": "kd"}, "1 1 NaN NaN NaN NaN"),
                _series("cdseg_train_loss", {**rank, "term": "seg"}, "1x5"),
                _series("cdseg_train_loss", {**rank, "term": "cd"}, "1 1 1 Inf Inf Inf"),
                # p trains for 5 minutes and then stops; q keeps training
                _series("cdseg_train_iterations_total", rank, "0+10x5 50x30"),
                _series("cdseg_train_iterations_total", stuck, "0+10x40"),
                _series("kube_pod_status_phase", {"namespace": "ns", "pod": "w-0", "phase": "Pending"}, "1x40"),
                _series("kube_pod_labels", {"namespace": "ns", "pod": "w-0", "label_app_kubernetes_io_name": "cdseg"},
                        "1x40"),
                _series("kube_pod_status_phase", {"namespace": "ns", "pod": "other", "phase": "Pending"}, "1x40"),
                _series("kube_pod_labels", {"namespace": "ns", "pod": "other"}, "1x40"),
            ],
            "alert_rule_test": [
                {"eval_time": "2m", "alertname": "CdsegLossNotFinite", "exp_alerts": []},
                {"eval_time": "5m", "alertname": "CdsegLossNotFinite", "exp_alerts": [
                    {"exp_labels": {"severity": "critical", **L, "term": term},
                     "exp_annotations": {
                         "summary": f"cdseg loss term {term} is not finite",
                         "description": f"Step 1 of 222a (mib) in ns/p logged a NaN or infinite {term} loss; the "
                                        "trainer stops on it. Lower the learning rate or check the data."}}
                    for term in ("cd", "kd")]},
                {"eval_time": "12m", "alertname": "CdsegTrainingStalled", "exp_alerts": []},
                {"eval_time": "30m", "alertname": "CdsegTrainingStalled", "exp_alerts": [
                    {"exp_labels": {"severity": "warning", **rank},
                     "exp_annotations": {
                         "summary": "cdseg step 1 of 222a (mib) is stalled",
                         "description": "Rank 0 in pod ns/p completed no training iteration for 15 minutes. Look "
                                        "for a hung data loader, storage or NCCL in its log."}}]},
                {"eval_time": "20m", "alertname": "CdsegTrainingPodPending", "exp_alerts": []},
                {"eval_time": "35m", "alertname": "CdsegTrainingPodPending", "exp_alerts": [
                    {"exp_labels": {"severity": "warning", "namespace": "ns", "pod": "w-0"},
                     "exp_annotations": {
                         "summary": "cdseg training pod ns/w-0 pending for 30 minutes",
                         "description": "No node can take the pod (GPUs, memory, node selector, taints) or its "
                                        "queue has not admitted it. `kubectl describe pod` shows why; cdseg launch "
                                        "fails the step at its --pending-timeout."}}]},
            ],
        }],
    }
    path = tmp_path / "tests.yaml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    out = subprocess.run([need_binary("promtool"), "test", "rules", str(path)], capture_output=True, text=True,
                         check=False)
    assert out.returncode == 0, out.stdout + out.stderr
