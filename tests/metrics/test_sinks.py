"""The sink API the trainer uses: fan-out, log lines, the /metrics endpoint, port rules, cheap calls."""

from __future__ import annotations

import logging
import socket
import time

import pytest

from cdseg.metrics import FanoutSink, LogSink, MetricsConfig, open_sink, push_summary
from cdseg.metrics.prometheus import PrometheusSink

from .conftest import free_port, http_get

LABELS = {"task": "6-2", "step": 1, "rank": 0, "method": "mib"}


def test_port_zero_disables_the_endpoint() -> None:
    sink = open_sink(MetricsConfig(port=0), LABELS)
    assert isinstance(sink, FanoutSink)
    assert [type(s) for s in sink.sinks] == [LogSink]
    sink.close()
    assert [type(s) for s in open_sink(MetricsConfig(enabled=False), LABELS).sinks] == [LogSink]


def test_only_low_cardinality_labels() -> None:
    with pytest.raises(ValueError, match="scene"):
        open_sink(MetricsConfig(port=0), {**LABELS, "scene": "top_potsdam_2_10"})


def test_log_sink_reports_on_rank_zero_only(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="cdseg.metrics")
    for rank in (0, 1):
        sink = LogSink({**LABELS, "rank": str(rank)})
        sink.set_epoch(3)
        sink.observe_iteration(0.5, 0.1, 8)
        sink.log({"loss/ce": 0.25, "lr": 0.001}, 42, "train")
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "it 42 epoch 3" in message and "loss/ce=0.25" in message and "16.0 img/s" in message
    assert caplog.records[0].metrics == {"loss/ce": 0.25, "lr": 0.001}  # type: ignore[attr-defined]


def test_endpoint_serves_the_catalogue(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    monkeypatch.setenv("LOCAL_RANK", "0")
    with open_sink(MetricsConfig(port=port, addr="127.0.0.1"), LABELS) as sink:
        sink.observe_iteration(0.2, 0.01, 4)
        sink.log({"loss/kd": 0.5, "lr": 0.02, "miou/old": 0.9}, 7, "train")  # miou is not a train key: ignored
        sink.log({"miou/new": 0.4, "miou/bogus": 1.0}, 7, "val")
        text = http_get(f"http://127.0.0.1:{port}/metrics").decode()
    labels = 'method="mib",rank="0",step="1",task="6-2"'
    assert f'cdseg_train_loss{{{labels},term="kd"}} 0.5' in text
    assert f"cdseg_train_learning_rate{{{labels}}} 0.02" in text
    assert f"cdseg_train_global_step{{{labels}}} 7.0" in text
    assert f"cdseg_train_samples_total{{{labels}}} 4.0" in text
    assert 'cdseg_eval_miou_ratio{method="mib",split="val",step="1",subset="new",task="6-2"} 0.4' in text
    assert "bogus" not in text and 'split="train"' not in text
    assert "_created" not in text
    with pytest.raises(OSError):
        http_get(f"http://127.0.0.1:{port}/metrics", timeout=1)  # closed with the sink


def test_local_rank_offsets_the_port(monkeypatch: pytest.MonkeyPatch) -> None:
    assert MetricsConfig(port=9400).port_for(3) == 9403
    assert MetricsConfig(port=0).port_for(3) == 0
    base = free_port()
    monkeypatch.setenv("LOCAL_RANK", "1")
    sink = PrometheusSink(MetricsConfig(port=base - 1, addr="127.0.0.1"), {"rank": "1"})
    try:
        assert sink.port == base
    finally:
        sink.close()


def test_taken_port_warns_and_training_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        sink = PrometheusSink(MetricsConfig(port=port, addr="127.0.0.1"), {"rank": "0"}, local_rank=0)
        sink.observe_iteration(0.1, 0.0, 1)
        sink.close()
    assert sink.port == 0
    assert "cannot serve metrics" in caplog.text and "metrics.port" in caplog.text


def test_push_without_gateway_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CDSEG_PUSHGATEWAY", raising=False)
    assert push_summary(MetricsConfig(), "cdseg-test", {"run": "r", "step": 0}, {"miou/all": 0.5}) is False


def test_unreachable_gateway_is_a_warning(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("CDSEG_PUSHGATEWAY", f"127.0.0.1:{free_port()}")
    cfg = MetricsConfig(push_timeout_s=2)
    assert cfg.resolved_pushgateway() is not None and cfg.resolved_pushgateway().startswith("http://")
    assert push_summary(cfg, "cdseg-test", {"run": "r", "step": 0}, {"miou/all": 0.5}) is False
    assert "could not push" in caplog.text


def test_bad_pushgateway_url_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="pushgateway"):
        MetricsConfig(pushgateway="pushgateway:9091")


def test_calls_are_cheap() -> None:
    """Guard against accidental heavy work per iteration (generous bound; real figures in the docs)."""
    sink = open_sink(MetricsConfig(port=0), {**LABELS, "rank": 1})
    prom = PrometheusSink(MetricsConfig(port=0), {"rank": "1"})
    start = time.perf_counter()
    for it in range(2000):
        for s in (sink, prom):
            s.observe_iteration(0.1, 0.01, 8)
            s.log({"loss/ce": 0.5, "loss/kd": 0.1, "lr": 1e-3}, it, "train")
    per_iteration = (time.perf_counter() - start) / 2000
    assert per_iteration < 1e-3


def test_gpu_memory_is_read_at_scrape_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """With CUDA present the sink exports allocator counters (host-side reads, no device sync)."""
    import sys
    import types

    allocated = {"now": 123.0}
    cuda = types.SimpleNamespace(is_available=lambda: True, device_count=lambda: 2, is_initialized=lambda: True,
                                 memory_allocated=lambda d: allocated["now"] + d, max_memory_allocated=lambda d: 4096.0)
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    from prometheus_client import generate_latest

    sink = PrometheusSink(MetricsConfig(port=0), {"rank": "1"}, local_rank=1)
    allocated["now"] = 1000.0  # read when scraped, not when the sink was made
    text = generate_latest(sink.registry).decode()
    assert 'cdseg_gpu_memory_allocated_bytes{method="",rank="1",step="",task=""} 1001.0' in text
    assert 'cdseg_gpu_memory_max_allocated_bytes{method="",rank="1",step="",task=""} 4096.0' in text
    sink.close()


def test_no_gpu_series_without_cuda() -> None:
    from prometheus_client import generate_latest

    sink = PrometheusSink(MetricsConfig(port=0), {"rank": "0"})
    text = generate_latest(sink.registry).decode()
    import sys

    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        assert "cdseg_gpu_memory_allocated_bytes{" not in text
    sink.close()


@pytest.mark.parametrize(("pod", "addr"), [(False, "127.0.0.1"), (True, "0.0.0.0")])
def test_endpoint_binds_loopback_unless_in_a_pod(monkeypatch: pytest.MonkeyPatch, pod: bool, addr: str) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    if pod:
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    sink = PrometheusSink(MetricsConfig(port=free_port()), {"rank": "0"}, local_rank=0)
    try:
        assert sink.server is not None and sink.server.server_address[0] == addr
    finally:
        sink.close()
    assert MetricsConfig(addr="::1").resolved_addr() == "::1"  # an explicit address wins
