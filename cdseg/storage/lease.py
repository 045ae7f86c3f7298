"""An exclusive, renewed lease on a remote output: one small object written with conditional PUTs.

Taking it is a PUT with `If-None-Match: *` (fails when the object exists); the holder renews it every
third of its time to live with `If-Match: <etag>` (fails when someone else took it); a contender
that finds it expired (its holder crashed) takes it over with `If-Match` on the expired object's
ETag, so of two contenders only one wins. Expiry is judged by the contender's clock against the
holder's: clocks must agree to well within the time to live.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from typing import Any

from cdseg.storage.errors import StorageError
from cdseg.storage.s3 import S3Wire, botocore_exceptions
from cdseg.storage.uri import Remote

log = logging.getLogger(__name__)
LEASE_NAME = "_cdseg_lease.json"


class LeaseHeld(StorageError):
    """Another live run holds the lease (exit 2)."""


class RemoteLease:
    """The lease object `<output>/_cdseg_lease.json`; `acquire`, then `renew` periodically, then `release`."""

    def __init__(self, wire: S3Wire, output: Remote, ttl_s: float, what: str = "output") -> None:
        self.wire, self.output, self.ttl_s, self.what = wire, output, ttl_s, what
        self.obj = output.child(LEASE_NAME)
        self.started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.etag: str | None = None
        self.lost = False

    def _body(self) -> bytes:
        return json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": self.started,
                           "expires": time.time() + self.ttl_s}).encode()

    def _put(self, **condition: str) -> str | None:
        """The new ETag, or None when the condition failed (412) or raced (409)."""
        client = self.wire.client(self.obj)
        try:
            resp = client.put_object(Bucket=self.obj.bucket, Key=self.obj.key, Body=self._body(), **condition)
        except botocore_exceptions.ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status in (409, 412):
                return None
            raise self.wire.translate(exc, self.obj, "take the lease") from exc
        except Exception as exc:
            raise self.wire.translate(exc, self.obj, "take the lease") from exc
        return str(resp.get("ETag", ""))

    def _current(self) -> tuple[dict[str, Any], str] | None:
        got = self.wire.head(self.obj)
        if got is None:
            return None
        data = self.wire.get(self.obj)
        if data is None:
            return None
        try:
            info = json.loads(data[0])
        except ValueError:
            info = {}
        return (info if isinstance(info, dict) else {}), str(got.get("ETag", ""))

    def acquire(self) -> None:
        """Take the lease, or raise `LeaseHeld` naming the live holder."""
        for _attempt in range(5):
            etag = self._put(IfNoneMatch="*")
            if etag is not None:
                self.etag = etag
                return
            current = self._current()
            if current is None:
                continue  # released meanwhile
            info, old = current
            if float(info.get("expires", 0)) > time.time():
                raise LeaseHeld(f"--{self.what} {self.output} is in use by another cdseg run (host {info.get('host')}, "
                                f"pid {info.get('pid')}, started {info.get('started')}); wait for it to finish or "
                                f"choose another --{self.what}")
            etag = self._put(IfMatch=old)  # expired: its holder died; take it over unless another run just did
            if etag is not None:
                log.warning("took over the expired lease of %s (host %s, pid %s)", self.output, info.get("host"),
                            info.get("pid"))
                self.etag = etag
                return
        raise LeaseHeld(f"--{self.what} {self.output}: its lease keeps changing hands; another run is starting on it")

    def renew(self) -> bool:
        """Extend the lease; False (and `lost`) when another run took it."""
        if self.lost or self.etag is None:
            return False
        etag = self._put(IfMatch=self.etag)
        if etag is None:
            self.lost = True
            log.error("the lease of %s was taken by another run; this run no longer owns its output", self.output)
            return False
        self.etag = etag
        return True

    def release(self) -> None:
        """Delete the lease object if it is still ours."""
        if self.lost or self.etag is None:
            return
        current = self.wire.head(self.obj)
        if current is not None and str(current.get("ETag", "")) == self.etag:
            self.wire.delete(self.obj)
        self.etag = None


class Renewer(threading.Thread):
    """Renews a lease every third of its time to live until stopped."""

    def __init__(self, lease: RemoteLease) -> None:
        super().__init__(name="cdseg-lease", daemon=True)
        self.lease, self.stop = lease, threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.lease.ttl_s / 3):
            try:
                if not self.lease.renew():
                    return
            except StorageError as exc:  # an outage: keep trying while the lease is still valid
                log.warning("could not renew the lease of %s: %s", self.lease.output, exc)
