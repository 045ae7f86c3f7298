"""The remote lease against moto's S3 server (real HTTP, real boto3): conditional writes decide who owns an
output, a release never deletes another run's lease, a lost lease stops this run's writes, and a request
whose answer was lost does not make a run refuse itself."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pytest

import cdseg.storage as storage
from cdseg.storage.lease import LEASE_NAME, LeaseHeld, LeaseLost, RemoteLease
from cdseg.storage.uri import parse_remote


def _lease(s3: dict[str, Any], out: str, ttl_s: float = 60.0) -> RemoteLease:
    return RemoteLease(storage._s3().wire, parse_remote(out), ttl_s)


def _obj(s3: dict[str, Any], out: str) -> dict[str, Any]:
    remote = parse_remote(storage.join(out, LEASE_NAME))
    got = s3["client"].get_object(Bucket=remote.bucket, Key=remote.key)
    return {**json.loads(got["Body"].read()), "etag": got["ETag"]}


def test_the_store_honours_the_conditions(s3: dict[str, Any]) -> None:
    out = storage.join(s3["root"], "out")
    first, second = _lease(s3, out), _lease(s3, out)
    first.acquire()
    with pytest.raises(LeaseHeld, match=rf"in use by another cdseg run \(host .+, pid {os.getpid()}, started .+\)"):
        second.acquire()  # If-None-Match: * refused the second PUT
    old = _obj(s3, out)["etag"]
    assert first.renew() and _obj(s3, out)["etag"] != old  # If-Match on its own ETag
    assert second._put("take over", IfMatch=old) is None  # a stale ETag is refused
    first.release()
    assert not storage.exists(storage.join(out, LEASE_NAME))


def test_two_contenders_for_an_expired_lease_one_wins(s3: dict[str, Any]) -> None:
    out = storage.join(s3["root"], "out")
    storage.write_bytes(storage.join(out, LEASE_NAME),
                        json.dumps({"host": "gone", "pid": 1, "started": "x", "expires": time.time() - 1}).encode())
    expired = _obj(s3, out)["etag"]
    a, b = _lease(s3, out), _lease(s3, out)
    assert a._put("take over", IfMatch=expired) is not None
    assert b._put("take over", IfMatch=expired) is None  # the same expired ETag: only one takes it
    with pytest.raises(LeaseHeld):
        b.acquire()
    assert _obj(s3, out)["token"] == a.me["token"]


def test_release_leaves_a_lease_taken_over_meanwhile(s3: dict[str, Any]) -> None:
    out = storage.join(s3["root"], "out")
    a = _lease(s3, out)
    a.acquire()
    remote = parse_remote(storage.join(out, LEASE_NAME))
    s3["client"].put_object(Bucket=remote.bucket, Key=remote.key, Body=json.dumps({"host": "other", "pid": 7}).encode())
    a.release()  # conditional DELETE on a's ETag: refused, the other run's lease stays
    assert _obj(s3, out)["host"] == "other"


def test_a_lost_lease_stops_this_runs_writes(s3: dict[str, Any]) -> None:
    out = storage.join(s3["root"], "out")
    with storage.remote_lease(out, ttl_s=0.6):
        storage.write_bytes(storage.join(out, "a.txt"), b"mine")
        remote = parse_remote(storage.join(out, LEASE_NAME))
        s3["client"].put_object(Bucket=remote.bucket, Key=remote.key,
                                Body=json.dumps({"host": "other", "pid": 7, "expires": time.time() + 60}).encode())
        time.sleep(1.0)  # a renewal (every 0.2 s) finds the lease taken
        with pytest.raises(LeaseLost, match=r"another run took over this run's lease"):
            storage.write_bytes(storage.join(out, "b.txt"), b"late")
        with pytest.raises(LeaseLost), storage.staged_dir(storage.join(out, "folder")) as tmp:
            (tmp / "x").write_bytes(b"x")
    assert not storage.exists(storage.join(out, "b.txt")) and not storage.exists(storage.join(out, "folder"))
    assert _obj(s3, out)["host"] == "other"  # not released: it is not ours


def test_a_lost_answer_to_the_taking_put_is_not_a_refusal(s3: dict[str, Any]) -> None:
    out = storage.join(s3["root"], "out")
    s3["proxy"].fail("lose")  # the PUT lands, its answer does not: the client retries it and gets 412
    with storage.remote_lease(out):
        assert s3["proxy"].injected == 1
        assert _obj(s3, out)["pid"] == os.getpid()
    assert not storage.exists(storage.join(out, LEASE_NAME))


def test_one_entry_point_for_local_and_remote_outputs(s3: dict[str, Any], tmp_path) -> None:
    out = storage.join(s3["root"], "out")
    with storage.output_lease(out), pytest.raises(LeaseHeld), storage.output_lease(out):
        pass
    with storage.output_lease(tmp_path / "local"):
        assert (tmp_path / ".local.lock").is_file()
    assert not (tmp_path / ".local.lock").exists()
