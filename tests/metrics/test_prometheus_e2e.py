"""End to end: a fake training loop on the trainer's sink API, scraped by a real Prometheus (1 s),
and short-step pushes through a real Pushgateway; everything read back through their HTTP APIs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from cdseg.metrics import MetricsConfig, delete_group, delete_groups, list_groups, push_summary
from cdseg.metrics.prometheus import PrometheusSink

from .conftest import Prometheus, free_port, http_get, need_binary

LABELS = {"task": "6-2", "step": "1", "method": "mib-cd"}
ITERATIONS = 20
BATCH = 4


def _fake_training(sink: PrometheusSink, rank: int) -> None:
    """What the trainer does: per-iteration timings, losses every few iterations, validation at the end."""
    sink.set_epoch(0)
    for it in range(ITERATIONS):
        sink.observe_iteration(step_time_s=0.05 + 0.01 * rank, data_wait_s=0.004, samples=BATCH)
        if it % 5 == 4:
            sink.log({"loss": 0.9, "loss/ce": 0.7 - 0.01 * it, "loss/kd": 0.1, "loss/cd": 0.1, "lr": 0.01}, it, "train")
    sink.set_epoch(1)
    sink.log({"miou/old": 0.61, "miou/new": 0.34, "miou/all": 0.52, "loss/ce": 0.8}, ITERATIONS, "val")


@pytest.fixture(scope="module")
def stack(pushgateway: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    binary = need_binary("prometheus")
    for _attempt in range(10):  # two ranks in one pod: port and port + 1 (retry if port + 1 is taken)
        cfg = MetricsConfig(port=free_port(), addr="127.0.0.1")
        sinks = [PrometheusSink(cfg, {**LABELS, "rank": str(r)}, local_rank=r) for r in (0, 1)]
        if all(s.port for s in sinks):
            break
        for s in sinks:
            s.close()
    else:
        pytest.fail("no two adjacent free ports on 127.0.0.1")
    for rank, sink in enumerate(sinks):
        _fake_training(sink, rank)
    targets = [f"127.0.0.1:{s.port}" for s in sinks]
    prom = Prometheus(binary, tmp_path_factory.mktemp("prometheus"), {
        "cdseg-trainer": {"targets": targets},
        "pushgateway": {"targets": [pushgateway.removeprefix("http://")], "honor_labels": True},
    })
    yield {"prom": prom, "sinks": sinks, "gateway": pushgateway, "ports": [s.port for s in sinks]}
    prom.stop()
    for s in sinks:
        s.close()


def test_ranks_serve_on_port_plus_local_rank(stack: dict[str, Any]) -> None:
    p0, p1 = stack["ports"]
    assert p1 == p0 + 1
    assert b'cdseg_train_samples_total{method="mib-cd",rank="1",step="1",task="6-2"}' in http_get(
        f"http://127.0.0.1:{p1}/metrics")


def test_loss_terms_arrive_with_labels(stack: dict[str, Any]) -> None:
    result = stack["prom"].wait_for('cdseg_train_loss{job="cdseg-trainer"}', count=8)
    terms = {(r["metric"]["term"], r["metric"]["rank"]) for r in result}
    assert terms == {(t, r) for t in ("total", "ce", "kd", "cd") for r in ("0", "1")}
    for r in result:
        assert {k: r["metric"][k] for k in ("task", "step", "method")} == LABELS
    ce = [r for r in result if r["metric"]["term"] == "ce"]
    assert float(ce[0]["value"][1]) == pytest.approx(0.7 - 0.01 * 19)


def test_counters_gauges_histograms(stack: dict[str, Any]) -> None:
    prom = stack["prom"]
    samples = prom.wait_for("cdseg_train_samples_total", count=2)
    assert {r["metric"]["rank"]: float(r["value"][1]) for r in samples} == {"0": 80.0, "1": 80.0}
    iterations = prom.wait_for('cdseg_train_iterations_total{rank="0"}')
    assert float(iterations[0]["value"][1]) == ITERATIONS
    assert float(prom.wait_for('cdseg_train_epoch{rank="1"}')[0]["value"][1]) == 1.0
    assert float(prom.wait_for('cdseg_train_learning_rate{rank="0"}')[0]["value"][1]) == 0.01
    throughput = prom.wait_for('cdseg_train_throughput_samples_per_second{rank="0"}')
    assert float(throughput[0]["value"][1]) == pytest.approx(BATCH / 0.05, rel=0.01)
    p50 = prom.wait_for("histogram_quantile(0.5, sum by (le, rank) (cdseg_train_step_duration_seconds_bucket))", 2)
    assert all(0.025 <= float(r["value"][1]) <= 0.1 for r in p50)
    count = prom.wait_for('cdseg_train_data_wait_seconds_count{rank="0"}')
    assert float(count[0]["value"][1]) == ITERATIONS


def test_validation_miou_per_subset(stack: dict[str, Any]) -> None:
    result = stack["prom"].wait_for('cdseg_eval_miou_ratio{job="cdseg-trainer", split="val"}', count=3)
    by_subset = {r["metric"]["subset"]: float(r["value"][1]) for r in result}
    assert by_subset == {"old": 0.61, "new": 0.34, "all": 0.52}


def test_push_read_back_and_delete(stack: dict[str, Any]) -> None:
    gateway, prom = stack["gateway"], stack["prom"]
    cfg = MetricsConfig(pushgateway=gateway)
    labels = {"task": "6-2", "method": "mib-cd"}
    assert push_summary(cfg, "cdseg-evaluate", {"run": "run-1", "step": 1},
                        {"miou/old": 0.61, "miou/new": 0.34, "duration_seconds": 12.5, "scenes": 2}, labels=labels)
    exposed = http_get(gateway + "/metrics").decode()
    line = next(x for x in exposed.splitlines() if x.startswith("cdseg_eval_miou_ratio{") and 'subset="old"' in x)
    for part in ('job="cdseg-evaluate"', 'run="run-1"', 'step="1"', 'split="test"', 'task="6-2"'):
        assert part in line
    assert line.endswith(" 0.61")
    assert "cdseg_job_duration_seconds{" in exposed and 'cdseg_job_value{' in exposed
    # ... and Prometheus scrapes it from the gateway with the grouping labels (honor_labels).
    result = prom.wait_for('cdseg_eval_miou_ratio{job="cdseg-evaluate", run="run-1", subset="new"}')
    assert float(result[0]["value"][1]) == 0.34
    # A second push to the same group replaces it (PUT).
    assert push_summary(cfg, "cdseg-evaluate", {"run": "run-1", "step": 1}, {"miou/old": 0.7}, labels=labels)
    exposed = http_get(gateway + "/metrics").decode()
    assert 'subset="new"' not in "".join(x for x in exposed.splitlines() if 'run="run-1"' in x)
    assert delete_group(cfg, "cdseg-evaluate", {"run": "run-1", "step": 1})
    assert 'run="run-1"' not in http_get(gateway + "/metrics").decode()


def test_delete_stale_groups_of_a_run(stack: dict[str, Any]) -> None:
    cfg = MetricsConfig(pushgateway=stack["gateway"])
    for run, step in (("old-run", 0), ("old-run", 1), ("live-run", 0)):
        assert push_summary(cfg, "cdseg-prepare", {"run": run, "step": step}, {"duration_seconds": 1.0})
    assert delete_groups(cfg, "cdseg-prepare", {"run": "old-run"}) == 2
    left = [g for g in list_groups(cfg) if g.get("job") == "cdseg-prepare"]
    assert [(g["run"], g["step"]) for g in left] == [("live-run", "0")]


def test_dashboard_queries_parse_and_return_data(stack: dict[str, Any]) -> None:
    """Every panel query is valid PromQL for the real server, and the core panels have data."""
    from .test_dashboard import dashboard_exprs

    prom = stack["prom"]
    prom.wait_for("cdseg_train_loss", count=8)
    with_data = 0
    for expr in dashboard_exprs():
        with_data += bool(prom.query(expr))  # raises on a syntax error (status "error")
    assert with_data >= 5
