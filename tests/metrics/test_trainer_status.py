"""`TrainerStatusSink` against a local HTTPS server on loopback whose certificate a self-signed CA issued:
the body, the bearer token (re-read when it rotates), rate limiting, and training never held up by a
dead or slow endpoint; nothing without the variables."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cdseg.metrics import MetricsConfig, open_sink
from cdseg.metrics.trainer_status import ENV_CA, ENV_TOKEN, ENV_URL, TrainerStatusSink


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate for 127.0.0.1 it signed: (ca.pem, server.pem, server.key)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test trainer CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(hours=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
            .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


class _Server:
    """An HTTPS server on loopback recording each POST's body and Authorization header."""

    def __init__(self, cert: Path, key: Path, delay_s: float = 0.0) -> None:
        self.posts: list[tuple[str, dict[str, Any]]] = []
        self.delay_s = delay_s
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                time.sleep(outer.delay_s)
                outer.posts.append((self.headers.get("Authorization", ""), body))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}/status"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()


@pytest.fixture()
def tls(tmp_path: Path) -> Iterator[dict[str, Any]]:
    ca, cert, key = _certificates(tmp_path)
    token = tmp_path / "token"
    token.write_text("token-1\n")
    server = _Server(cert, key)
    yield {"ca": ca, "cert": cert, "key": key, "token": token, "server": server}
    server.close()


def _wait(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_reports_progress_metrics_and_a_rotating_token(tls: dict[str, Any]) -> None:
    server = tls["server"]
    sink = TrainerStatusSink(server.url, str(tls["token"]), str(tls["ca"]), interval_s=0.0)
    sink.set_total(200)
    sink.log({"loss": 0.51234, "lr": 1e-3}, step=50)
    _wait(lambda: len(server.posts) == 1)
    sink.log({"miou": 0.5, "miou/old": 0.61, "miou/new": 0.42}, step=100, kind="val")
    _wait(lambda: len(server.posts) == 2)
    tls["token"].write_text("token-2\n")  # the kubelet rotates the projected token
    sink.log({"loss": 0.4}, step=150)
    _wait(lambda: len(server.posts) == 3)
    sink.close()
    auths = [a for a, _ in server.posts]
    assert auths == ["Bearer token-1", "Bearer token-1", "Bearer token-2"]
    first = server.posts[0][1]["trainerStatus"]
    assert first["progressPercentage"] == 25 and first["estimatedRemainingSeconds"] >= 0
    assert first["metrics"] == [{"name": "loss", "value": "0.5123"}] and first["lastUpdatedTime"].endswith("Z")
    last = server.posts[2][1]["trainerStatus"]
    assert last["progressPercentage"] == 75
    assert {m["name"]: m["value"] for m in last["metrics"]} == {
        "loss": "0.4", "val_miou": "0.5", "val_miou_old": "0.61", "val_miou_new": "0.42"}


def test_rate_limited(tls: dict[str, Any]) -> None:
    server = tls["server"]
    sink = TrainerStatusSink(server.url, str(tls["token"]), str(tls["ca"]), interval_s=60.0)
    sink.set_total(1000)
    for step in range(1, 500):
        sink.log({"loss": 1.0 / step}, step=step)
    sink.close()
    assert len(server.posts) == 1


def test_a_dead_or_slow_endpoint_never_holds_training_up(tls: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    dead = TrainerStatusSink("https://127.0.0.1:9/status", str(tls["token"]), str(tls["ca"]), interval_s=0.0,
                             timeout_s=1.0)
    slow_server = _Server(tls["cert"], tls["key"], delay_s=2.0)
    slow = TrainerStatusSink(slow_server.url, str(tls["token"]), str(tls["ca"]), interval_s=0.0, timeout_s=5.0)
    try:
        start = time.perf_counter()
        with caplog.at_level("DEBUG", logger="cdseg.metrics"):
            for step in range(1, 2001):
                dead.log({"loss": 0.1}, step=step)
                slow.log({"loss": 0.1}, step=step)
            elapsed = time.perf_counter() - start
            dead.close()
        assert elapsed < 1.0, f"2000 iterations took {elapsed:.2f}s with a dead and a slow endpoint"
        warnings = [r for r in caplog.records if r.levelname == "WARNING" and "could not report" in r.getMessage()]
        assert len(warnings) == 1, "one warning, then quiet"
    finally:
        slow.close()
        slow_server.close()
    assert 1 <= len(slow_server.posts) <= 3, "the slow endpoint got the latest states, not a backlog of 2000"


def test_an_untrusted_certificate_is_refused(tls: dict[str, Any], tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "other").mkdir()
    other_ca, _, _ = _certificates(tmp_path / "other")
    sink = TrainerStatusSink(tls["server"].url, str(tls["token"]), str(other_ca), interval_s=0.0)
    with caplog.at_level("WARNING", logger="cdseg.metrics"):
        sink.log({"loss": 0.3}, step=1)
        sink.close()
    assert tls["server"].posts == [] and "CERTIFICATE_VERIFY_FAILED" in caplog.text


def test_nothing_without_the_variables(tls: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    env = {ENV_URL: tls["server"].url, ENV_TOKEN: str(tls["token"]), ENV_CA: str(tls["ca"])}
    assert TrainerStatusSink.from_env(0, {}) is None
    assert TrainerStatusSink.from_env(0, {ENV_URL: tls["server"].url}) is None
    assert TrainerStatusSink.from_env(1, env) is None, "rank 0 only"
    for key in env:
        monkeypatch.delenv(key, raising=False)
    plain = open_sink(MetricsConfig(port=0), {"rank": 0})
    assert not any(isinstance(s, TrainerStatusSink) for s in plain.sinks)  # type: ignore[attr-defined]
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    sink = open_sink(MetricsConfig(port=0), {"rank": 0})
    reporters = [s for s in sink.sinks if isinstance(s, TrainerStatusSink)]  # type: ignore[attr-defined]
    assert len(reporters) == 1
    sink.close()
