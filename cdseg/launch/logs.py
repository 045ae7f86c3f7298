"""Follow the master pod's log in a background thread, keeping its last lines for error messages."""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from typing import Any

from cdseg.launch.kube import KubeApis

log = logging.getLogger(__name__)


def labels_match(pod: Any, selector: dict[str, str]) -> bool:
    """Whether a V1Pod carries every label of `selector` (checked here too: not every server filters)."""
    labels = (pod.metadata.labels or {}) if pod.metadata else {}
    return all(labels.get(k) == v for k, v in selector.items())


def selector_text(selector: dict[str, str]) -> str:
    """`a=b,c=d` for a label_selector argument."""
    return ",".join(f"{k}={v}" for k, v in selector.items())


def find_pods(apis: KubeApis, namespace: str, selector: dict[str, str]) -> list[Any]:
    """The pods carrying `selector`'s labels."""
    pods = apis.core.list_namespaced_pod(namespace, label_selector=selector_text(selector)).items or []
    return [p for p in pods if labels_match(p, selector)]


class LogFollower(threading.Thread):
    """Streams the log of the pod matching `selector` to `sink`, line by line, until stopped."""

    def __init__(self, apis: KubeApis, namespace: str, selector: dict[str, str], container: str,
                 sink: Callable[[str], None], tail_lines: int = 50, retry_s: float = 2.0) -> None:
        super().__init__(name="cdseg-log-follower", daemon=True)
        self.apis, self.namespace, self.selector, self.container = apis, namespace, selector, container
        self.sink, self.retry_s = sink, retry_s
        self.tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
        self._stop_event = threading.Event()
        self._followed: set[tuple[str, int]] = set()  # (pod uid or name, restart count) already streamed

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to end and wait for it a little (the stream ends with the pod anyway)."""
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout)

    def run(self) -> None:
        """Follow the pod's current container; again after a restart; until stopped."""
        while not self._stop_event.is_set():
            try:
                self._follow_once()
            except Exception as exc:  # never let log streaming break the launcher
                log.debug("log streaming interrupted: %s", exc)
            self._stop_event.wait(self.retry_s)

    def _follow_once(self) -> None:
        pods = find_pods(self.apis, self.namespace, self.selector)
        if not pods:
            return
        pod = pods[0]
        key = (pod.metadata.uid or pod.metadata.name, _restarts(pod, self.container))
        if key in self._followed or not _container_started(pod, self.container):
            return
        self._followed.add(key)
        resp = self.apis.core.read_namespaced_pod_log(pod.metadata.name, self.namespace, container=self.container,
                                                      follow=True, _preload_content=False)
        try:
            buffer = b""
            for chunk in resp.stream(4096):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for raw in lines:
                    self._emit(raw)
                if self._stop_event.is_set():
                    break
            if buffer:
                self._emit(buffer)
        finally:
            resp.release_conn()

    def _emit(self, raw: bytes) -> None:
        line = raw.decode("utf-8", errors="replace").rstrip("\r")
        self.tail.append(line)
        self.sink(line)


def read_tail(apis: KubeApis, namespace: str, selector: dict[str, str], container: str, lines: int) -> list[str]:
    """The last `lines` lines of the matching pod's log (empty when there is no pod or log)."""
    try:
        pods = find_pods(apis, namespace, selector)
        if not pods:
            return []
        text = apis.core.read_namespaced_pod_log(pods[0].metadata.name, namespace, container=container,
                                                 tail_lines=lines)
    except Exception as exc:
        log.debug("could not read the log tail: %s", exc)
        return []
    return str(text or "").splitlines()[-lines:]


def _restarts(pod: Any, container: str) -> int:
    for st in (pod.status.container_statuses or []) if pod.status else []:
        if st.name == container:
            return int(st.restart_count or 0)
    return 0


def _container_started(pod: Any, container: str) -> bool:
    if pod.status is None:
        return False
    for st in pod.status.container_statuses or []:
        if st.name == container and st.state is not None:
            return bool(st.state.running or st.state.terminated)
    return pod.status.phase in ("Running", "Succeeded", "Failed")
