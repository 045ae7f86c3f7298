"""An exclusive, renewed lease on a remote output: one small object written with conditional PUTs.

Taking it is a PUT with `If-None-Match: *` (fails when the object exists); the holder renews it every
third of its time to live with `If-Match: <etag>` (fails when someone else took it) and releases it
with a DELETE carrying `If-Match: <etag>` (so a lease taken over meanwhile is left alone). A
contender that finds it expired (its holder crashed) takes it over with `If-Match` on the expired
object's ETag, so of two contenders only one wins. Expiry is judged by the contender's clock against
the holder's: clocks must agree to well within the time to live. S3 (since 2024), MinIO and moto
honour these conditions; a store that ignores them cannot give an output one owner.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from cdseg.storage.errors import StorageError
from cdseg.storage.s3 import S3Wire, botocore_exceptions
from cdseg.storage.uri import Remote

log = logging.getLogger(__name__)
LEASE_NAME = "_cdseg_lease.json"


class LeaseHeld(StorageError):
    """Another live run holds the lease (exit 2)."""


class LeaseLost(StorageError):
    """This run's lease was taken over by another run (its renewals failed for longer than the time to live)."""


def describe(info: dict[str, Any]) -> str:
    """`host H, pid P, started T` of a lease's holder."""
    return f"host {info.get('host', '?')}, pid {info.get('pid', '?')}, started {info.get('started', '?')}"


class RemoteLease:
    """The lease object `<output>/_cdseg_lease.json`; `acquire`, then `renew` periodically, then `release`."""

    def __init__(self, wire: S3Wire, output: Remote, ttl_s: float, what: str = "output") -> None:
        self.wire, self.output, self.ttl_s, self.what = wire, output, ttl_s, what
        self.obj = output.child(LEASE_NAME)
        self.me = {"host": socket.gethostname(), "pid": os.getpid(),
                   "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "token": uuid.uuid4().hex}
        self.etag: str | None = None
        self.lost = False

    def _body(self) -> bytes:
        return json.dumps({**self.me, "expires": time.time() + self.ttl_s}).encode()

    def _refused(self, exc: Exception) -> bool:
        """Whether a conditional request failed on its condition (412, 409 for a race, 404 for If-Match on a
        deleted object) rather than on the store."""
        if not isinstance(exc, botocore_exceptions.ClientError):
            return False
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = str(exc.response.get("Error", {}).get("Code", ""))
        return status in (409, 412) or (status == 404 and code != "NoSuchBucket")

    def _put(self, action: str, **condition: str) -> str | None:
        """The new ETag, or None when the condition failed."""
        client = self.wire.client(self.obj)
        try:
            resp = client.put_object(Bucket=self.obj.bucket, Key=self.obj.key, Body=self._body(),
                                     ContentType="application/json", **condition)
        except Exception as exc:
            if self._refused(exc):
                return None
            raise self.wire.translate(exc, self.obj, action) from exc
        return str(resp.get("ETag", ""))

    def _current(self) -> tuple[dict[str, Any], str] | None:
        """The lease's content and ETag (one GET, so they belong together), or None when there is none."""
        client = self.wire.client(self.obj)
        try:
            resp = client.get_object(Bucket=self.obj.bucket, Key=self.obj.key)
            data = resp["Body"].read()
        except Exception as exc:
            if self.wire.is_missing(exc):
                self.wire.check_bucket(self.obj)
                return None
            raise self.wire.translate(exc, self.obj, "read the lease") from exc
        try:
            info = json.loads(data)
        except ValueError:
            info = {}
        return (info if isinstance(info, dict) else {}), str(resp.get("ETag", ""))

    def _mine(self, info: dict[str, Any]) -> bool:
        return info.get("token") == self.me["token"]

    def acquire(self) -> None:
        """Take the lease, or raise `LeaseHeld` naming the live holder."""
        for _attempt in range(5):
            etag = self._put("take the lease", IfNoneMatch="*")
            if etag is not None:
                self.etag = etag
                return
            current = self._current()
            if current is None:
                continue  # released meanwhile
            info, old = current
            if self._mine(info):  # our own PUT landed but its answer was lost (the client retried it)
                self.etag = old
                return
            if float(info.get("expires", 0) or 0) > time.time():
                raise LeaseHeld(f"--{self.what} {self.output} is in use by another cdseg run ({describe(info)}); wait "
                                f"for it to finish or choose another --{self.what}")
            etag = self._put("take over the lease", IfMatch=old)  # expired: its holder died, unless another run just took it
            if etag is not None:
                log.warning("took over the expired lease of %s (%s)", self.output, describe(info))
                self.etag = etag
                return
        raise LeaseHeld(f"--{self.what} {self.output}: its lease keeps changing hands; another run is starting on it")

    def renew(self) -> bool:
        """Extend the lease; False (and `lost`) when another run took it."""
        if self.lost or self.etag is None:
            return False
        etag = self._put("renew the lease", IfMatch=self.etag)
        if etag is None:
            current = self._current()
            if current is not None and self._mine(current[0]):  # our renewal landed; its answer was lost
                self.etag = current[1]
                return True
            self.lost = True
            log.error("the lease of %s was taken by another run (%s); this run no longer owns its output", self.output,
                      describe(current[0]) if current else "the lease was deleted")
            return False
        self.etag = etag
        return True

    def check(self) -> None:
        """Raise `LeaseLost` when this run no longer owns its output (call before committing to it)."""
        if self.lost:
            raise LeaseLost(f"--{self.what} {self.output}: another run took over this run's lease (its renewals "
                            "failed for longer than the lease lives); nothing more was committed: run it again")

    def release(self) -> None:
        """Delete the lease object if it is still ours (a conditional DELETE)."""
        if self.lost or self.etag is None:
            return
        etag, self.etag = self.etag, None
        try:
            self.wire.client(self.obj).delete_object(Bucket=self.obj.bucket, Key=self.obj.key, IfMatch=etag)
        except Exception as exc:
            if not self._refused(exc):
                raise self.wire.translate(exc, self.obj, "release the lease") from exc


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
