"""Progress into a Kubeflow Trainer v2 TrainJob's `status.trainerStatus` (rank 0, when the controller asks).

A TrainJob whose controller enables progress reporting (feature gate `TrainJobStatus`) sets
`KUBEFLOW_TRAINER_SERVER_URL` and the files named by `KUBEFLOW_TRAINER_SERVER_TOKEN` (a bearer token,
rotated: re-read for every request) and `KUBEFLOW_TRAINER_SERVER_CA_CERT` in the trainer container.
`TrainerStatusSink` POSTs `{"trainerStatus": {...}}` there: progress percentage, estimated remaining
seconds and a few metrics (loss, last validation mIoU old/new). At most one request per `interval_s`,
sent from a background thread that keeps only the latest state, so a slow or dead endpoint never
slows or fails training; failures are logged once. Without the variables nothing happens.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import queue
import ssl
import threading
import time
import urllib.request
from collections.abc import Mapping
from typing import Any

from cdseg.metrics.sinks import MetricSink

log = logging.getLogger("cdseg.metrics")

ENV_URL = "KUBEFLOW_TRAINER_SERVER_URL"
ENV_TOKEN = "KUBEFLOW_TRAINER_SERVER_TOKEN"
ENV_CA = "KUBEFLOW_TRAINER_SERVER_CA_CERT"
#: metrics reported, by the name the sink receives them under -> the name shown in trainerStatus
REPORTED = {("train", "loss"): "loss", ("val", "miou"): "val_miou", ("val", "miou/old"): "val_miou_old",
            ("val", "miou/new"): "val_miou_new"}


class TrainerStatusSink(MetricSink):
    """Reports progress to the Trainer's status endpoint (see the module doc); rank 0 only."""

    def __init__(self, url: str, token_file: str, ca_file: str, *, interval_s: float = 5.0,
                 timeout_s: float = 5.0) -> None:
        self.url, self.token_file, self.ca_file = url, token_file, ca_file
        self.interval_s, self.timeout_s = interval_s, timeout_s
        self.total = 0
        self.metrics: dict[str, str] = {}
        self.sent = 0
        self._start = time.monotonic()
        self._last_sent = -float("inf")
        self._warned = False
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=1)
        self._thread = threading.Thread(target=self._run, name="cdseg-trainer-status", daemon=True)
        self._thread.start()

    @classmethod
    def from_env(cls, rank: int, environ: Mapping[str, str] | None = None, **kwargs: Any) -> TrainerStatusSink | None:
        """A sink when this is rank 0 and the controller set the three variables, else None."""
        env = os.environ if environ is None else environ
        if rank != 0 or not all(env.get(k) for k in (ENV_URL, ENV_TOKEN, ENV_CA)):
            return None
        return cls(env[ENV_URL], env[ENV_TOKEN], env[ENV_CA], **kwargs)

    def set_total(self, iterations: int) -> None:
        self.total = max(0, int(iterations))

    def log(self, values: Mapping[str, float], step: int, kind: str = "train") -> None:
        for (k_kind, name), shown in REPORTED.items():
            if k_kind == kind and name in values:
                self.metrics[shown] = f"{float(values[name]):.4g}"
        now = time.monotonic()
        if now - self._last_sent < self.interval_s:
            return
        self._last_sent = now
        self._offer(self.status(step, now))

    def status(self, step: int, now: float | None = None) -> dict[str, Any]:
        """The `trainerStatus` body for iteration `step` of `total`."""
        now = time.monotonic() if now is None else now
        body: dict[str, Any] = {
            "metrics": [{"name": k, "value": v} for k, v in self.metrics.items()],
            "lastUpdatedTime": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        if self.total:
            done = min(max(step, 0), self.total)
            body["progressPercentage"] = int(100 * done / self.total)
            if done:
                body["estimatedRemainingSeconds"] = int((now - self._start) / done * (self.total - done))
        return {"trainerStatus": body}

    def close(self) -> None:
        """Let the sender finish the state it holds (at most one request's timeout), then stop it."""
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=self.timeout_s + 1.0)  # behind the pending state, not instead of it
        self._thread.join(self.timeout_s + 1.0)

    # ---- the sender thread --------------------------------------------------------------------------
    def _offer(self, item: dict[str, Any] | None) -> None:
        """Queue `item`, replacing a state the sender has not taken yet (only the latest matters)."""
        while True:
            try:
                self._queue.put_nowait(item)
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._queue.get_nowait()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self._post(item)
                self.sent += 1
            except Exception as exc:  # never let reporting break training
                level = logging.DEBUG if self._warned else logging.WARNING
                self._warned = True
                log.log(level, "could not report progress to %s (%s); training goes on", self.url, exc)

    def _post(self, body: dict[str, Any]) -> None:
        with open(self.token_file, encoding="utf-8") as f:  # rotated by the kubelet: read every time
            token = f.read().strip()
        context = ssl.create_default_context(cafile=self.ca_file)
        request = urllib.request.Request(self.url, data=json.dumps(body).encode(), method="POST", headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=self.timeout_s, context=context) as resp:  # noqa: S310
            resp.read()
