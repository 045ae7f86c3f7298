"""Debian's `prometheus` and `prometheus-pushgateway` binaries on loopback (free ports, temp dirs).

Skipped, with the reason, when a binary is absent; under CI=true that is a failure instead.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def need_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        reason = f"{name} is not installed (apt-get install -y prometheus prometheus-pushgateway)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason + "; CI must run this test")
        pytest.skip(reason)
    return path


def http_get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback only
        return bytes(resp.read())


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            http_get(url, timeout=1.0)
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout}s: {log.read_text()[-2000:]}")


class Process:
    """A started binary, stopped (SIGTERM, then SIGKILL) at teardown."""

    def __init__(self, args: list[str], ready_url: str, log: Path) -> None:
        self.log = log
        self.proc = subprocess.Popen(args, stdout=open(log, "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
        try:
            wait_ready(ready_url, self.proc, log)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def pushgateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a fresh Pushgateway on 127.0.0.1 (persisting to its own temporary file only)."""
    binary = need_binary("prometheus-pushgateway")
    port = free_port()
    tmp = tmp_path_factory.mktemp("pushgateway")
    url = f"http://127.0.0.1:{port}"
    # Debian's build persists to /var/lib/prometheus/pushgateway.data by default, which every gateway started
    # on the machine would share (groups of one test module showing up in another): each gets its own file
    proc = Process([binary, f"--web.listen-address=127.0.0.1:{port}", f"--persistence.file={tmp / 'pushgateway.data'}"],
                   url + "/-/ready", tmp / "log.txt")
    yield url
    proc.stop()


class Prometheus:
    """A Prometheus server scraping given targets every second; `query` uses its HTTP API."""

    def __init__(self, binary: str, tmp: Path, jobs: dict[str, dict[str, Any]]) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        scrape = []
        for job, spec in jobs.items():
            entry = {"job_name": job, "scrape_interval": "1s", "scrape_timeout": "1s",
                     "static_configs": [{"targets": spec["targets"]}]}
            if spec.get("honor_labels"):
                entry["honor_labels"] = True
            scrape.append(entry)
        config = tmp / "prometheus.yml"
        config.write_text(json.dumps({"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                                      "scrape_configs": scrape}))  # JSON is YAML
        self.process = Process(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h"],
            self.url + "/-/ready", tmp / "log.txt")

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The result vector of an instant query."""
        payload = json.loads(http_get(self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": promql})))
        assert payload["status"] == "success", payload
        return list(payload["data"]["result"])

    def wait_for(self, promql: str, count: int = 1, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Poll until the query returns at least `count` series (bounded)."""
        deadline = time.monotonic() + timeout
        result: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            result = self.query(promql)
            if len(result) >= count:
                return result
            time.sleep(0.5)
        raise AssertionError(f"{promql}: {len(result)} series after {timeout}s, expected {count}; "
                             f"targets: {http_get(self.url + '/api/v1/targets')[:2000]!r}")

    def stop(self) -> None:
        self.process.stop()
