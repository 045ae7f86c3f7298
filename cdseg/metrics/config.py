"""`MetricsConfig`: the /metrics port every trainer rank serves, and the Pushgateway for short steps."""

from __future__ import annotations

import os

from pydantic import Field, field_validator

from cdseg.config.base import Section

DEFAULT_PORT = 9400


class MetricsConfig(Section):
    """Prometheus metrics: scraped from trainer pods (PodMonitor), pushed by short steps."""

    enabled: bool = Field(default=True, description="export Prometheus metrics at all (logging of metrics is always on)")
    port: int = Field(
       default=DEFAULT_PORT,
        ge=0,
        le=65535,
        description="TCP port of /metrics on local rank 0 (local rank r serves port + r); 0 disables the endpoint",
    )
    addr: str = Field(default="auto", description="address the /metrics endpoint binds to; auto: all interfaces "
                      "(0.0.0.0) in a Kubernetes pod, where Prometheus scrapes it, else loopback (127.0.0.1)")
    pushgateway: str | None = Field(
       default=None,
        description="Pushgateway URL for short steps (prepare, test, report, summary); default: CDSEG_PUSHGATEWAY, else no push",
    )
    push_timeout_s: float = Field(default=10.0, gt=0, description="timeout of one Pushgateway request (seconds)")

    @field_validator("pushgateway")
    @classmethod
    def _check_gateway(cls, value: str | None) -> str | None:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"pushgateway {value!r} must be a URL such as http://pushgateway.monitoring:9091")
        return value or None

    def resolved_pushgateway(self) -> str | None:
        """The Pushgateway URL: the config's, else CDSEG_PUSHGATEWAY, else None (no push)."""
        url = self.pushgateway or os.environ.get("CDSEG_PUSHGATEWAY") or None
        if url and not url.startswith(("http://", "https://")):
            url = "http://" + url
        return url.rstrip("/") if url else None

    def resolved_addr(self) -> str:
        """The bind address: the config's, or for `auto` 0.0.0.0 in a pod (KUBERNETES_SERVICE_HOST) and 127.0.0.1
        elsewhere, so a laptop run does not expose its metrics to the network."""
        if self.addr != "auto":
            return self.addr
        return "0.0.0.0" if os.environ.get("KUBERNETES_SERVICE_HOST") else "127.0.0.1"  # noqa: S104 - pods only

    def port_for(self, local_rank: int) -> int:
        """The port local rank `local_rank` serves on (0: disabled)."""
        return 0 if self.port == 0 or not self.enabled else self.port + local_rank
