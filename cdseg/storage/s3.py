"""The S3 wire (AWS, MinIO, any S3-compatible store): the only module that imports boto3.

Credentials come from the standard AWS chain (environment, shared files, IAM role / IRSA); requests
retry in adaptive mode (5xx, throttling, dropped connections) and a body cut off mid-stream is read
again. Uploads use boto3's managed multipart transfer (s3transfer). Every boto error is translated into
one `StorageError` line naming the URI and the fix. Integrity, folders and caching: `remote.py`.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from cdseg.storage.config import StorageConfig
from cdseg.storage.errors import StorageError, StorageUnavailableError
from cdseg.storage.uri import Remote
from cdseg.utils.lazy import lazy_import

boto3 = lazy_import("boto3", "s3:// and minio:// storage", "pip install boto3")
botocore_config = lazy_import("botocore.config", "s3:// and minio:// storage", "pip install boto3")
botocore_exceptions = lazy_import("botocore.exceptions", "s3:// and minio:// storage", "pip install boto3")
s3transfer_manager = lazy_import("s3transfer.manager", "s3:// and minio:// storage", "pip install boto3")
s3transfer_subscribers = lazy_import("s3transfer.subscribers", "s3:// and minio:// storage", "pip install boto3")

log = logging.getLogger(__name__)
T = TypeVar("T")
_MiB = 1024 * 1024


class _KnownSize(s3transfer_subscribers.BaseSubscriber):  # type: ignore[name-defined]
    """Tell s3transfer an upload's size up front, so it needs no buffering probe of the stream."""

    def __init__(self, size: int) -> None:
        self._size = size

    def on_queued(self, future: Any, **kwargs: Any) -> None:
        future.meta.provide_transfer_size(self._size)


def transfer_config(cfg: StorageConfig) -> Any:
    """The s3transfer settings of `cfg` (also used by `cdseg bench storage` for its plain-boto3 baseline)."""
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(
        multipart_threshold=int(cfg.multipart_threshold_mb * _MiB),
        multipart_chunksize=int(cfg.multipart_chunksize_mb * _MiB),
        max_concurrency=cfg.max_concurrency,
        use_threads=True,
    )


def make_client(cfg: StorageConfig, scheme: str = "s3") -> Any:
    """A boto3 S3 client for `cfg` (endpoint, region, adaptive retries, a connection pool per thread)."""
    endpoint = cfg.resolved_endpoint(scheme)
    config = botocore_config.Config(
        retries={"max_attempts": cfg.max_attempts, "mode": "adaptive"},
        max_pool_connections=2 * cfg.max_concurrency + 4,  # upload and download threads
        connect_timeout=10,
        read_timeout=60,
        s3={"addressing_style": "path"} if endpoint else {},
        # Downloads are verified end to end against our sha256; botocore's CRC check would hash the bytes twice.
        response_checksum_validation="when_required",
    )
    session = boto3.session.Session(region_name=cfg.resolved_region())
    return session.client("s3", endpoint_url=endpoint, config=config)


class S3Wire:
    """Requests to an S3-compatible store for `Remote` locations; boto errors become `StorageError`s naming the URI."""

    def __init__(self, cfg: StorageConfig) -> None:
        self.cfg = cfg
        self._lock = threading.Lock()
        self._clients: dict[str, Any] = {}
        self._managers: dict[str, Any] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._buckets_ok: set[tuple[str, str]] = set()

    # ------------------------------------------------------------------ plumbing
    def client(self, remote: Remote) -> Any:
        """The client for the remote's scheme (minio:// may default to another endpoint)."""
        with self._lock:
            if remote.scheme not in self._clients:
                self._clients[remote.scheme] = make_client(self.cfg, remote.scheme)
            return self._clients[remote.scheme]

    def manager(self, remote: Remote) -> Any:
        """The managed-transfer manager (threads reused across transfers) for the remote's scheme."""
        client = self.client(remote)
        with self._lock:
            if remote.scheme not in self._managers:
                self._managers[remote.scheme] = s3transfer_manager.TransferManager(
                    client, transfer_config(self.cfg)
                )
            return self._managers[remote.scheme]

    def close(self) -> None:
        """Stop the transfer threads."""
        with self._lock:
            for manager in self._managers.values():
                manager.shutdown()
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)
                self._executor = None
            self._managers.clear()
            self._clients.clear()

    def call(self, remote: Remote, action: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except StorageError:
            raise
        except Exception as exc:
            raise self.translate(exc, remote, action) from exc

    def translate(self, exc: BaseException, remote: Remote, action: str) -> StorageError:
        """One readable line for a boto/transfer error: which URI, what went wrong, what to do."""
        exc = _root_cause(exc)
        uri = str(remote)
        endpoint = self.cfg.resolved_endpoint(remote.scheme) or "AWS S3"
        ex = botocore_exceptions
        if isinstance(exc, (ex.NoCredentialsError, ex.PartialCredentialsError)):
            return StorageError(
                f"no S3 credentials found to {action} {uri}; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "(or AWS_PROFILE, or give the pod an IAM role / IRSA service account)"
            )
        if isinstance(exc, (ex.EndpointConnectionError, ex.ConnectionClosedError, ex.ConnectTimeoutError,
                            ex.ReadTimeoutError, ex.ConnectionError, ex.HTTPClientError)):
            return StorageUnavailableError(
                f"cannot reach the S3 endpoint {endpoint} to {action} {uri} ({type(exc).__name__}); check "
                "storage.endpoint_url / AWS_ENDPOINT_URL and that the store is running (a retry may succeed)"
            )
        if isinstance(exc, ex.ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "NoSuchBucket":
                return StorageError(f"bucket {remote.bucket!r} does not exist ({uri}); create it or fix the URI")
            if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"):
                return StorageError(
                    f"the S3 credentials were rejected ({code}) to {action} {uri}; check AWS_ACCESS_KEY_ID / "
                    "AWS_SECRET_ACCESS_KEY (or the profile / role) for this endpoint"
                )
            if code in ("AccessDenied", "AllAccessDisabled", "403") or status == 403:
                return StorageError(
                    f"access denied to {action} {uri}; check the credentials' permissions and the bucket policy"
                )
            if code in ("NoSuchKey", "404", "NotFound") or status == 404:
                return StorageError(f"{uri} does not exist; check the URI (or run the step that writes it)")
            if (isinstance(status, int) and status >= 500) or code in _UNAVAILABLE_CODES:
                return StorageUnavailableError(f"the S3 endpoint {endpoint} kept failing to {action} {uri} "
                                               f"({code or status}); wait for the store to recover (a retry may succeed)")
            return StorageError(f"S3 refused to {action} {uri}: {code} {err.get('Message', '')}".rstrip())
        if isinstance(exc, ex.BotoCoreError):
            return StorageError(f"S3 error to {action} {uri}: {exc}")
        if isinstance(exc, OSError):
            return StorageError(f"local I/O error to {action} {uri}: {exc}")
        return StorageError(f"failed to {action} {uri}: {type(exc).__name__}: {exc}")

    def is_missing(self, exc: BaseException) -> bool:
        exc = _root_cause(exc)
        if not isinstance(exc, botocore_exceptions.ClientError):
            return False
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return code in ("NoSuchKey", "404", "NotFound") or (status == 404 and code != "NoSuchBucket")

    def check_bucket(self, remote: Remote) -> None:
        """HEAD the bucket once per process, so a 404 on an object is not mistaken for a missing bucket."""
        key = (remote.scheme, remote.bucket)
        if key in self._buckets_ok:
            return
        try:
            self.client(remote).head_bucket(Bucket=remote.bucket)
        except Exception as exc:
            if self.is_missing(exc) or "NoSuchBucket" in str(exc):
                raise StorageError(
                    f"bucket {remote.bucket!r} does not exist ({remote}); create it or fix the URI"
                ) from exc
            raise self.translate(exc, remote, "reach the bucket of") from exc
        self._buckets_ok.add(key)

    def head(self, remote: Remote) -> dict[str, Any] | None:
        """The object's HEAD response, or None if there is no such object (bucket checked)."""
        try:
            return dict(self.client(remote).head_object(Bucket=remote.bucket, Key=remote.key))
        except Exception as exc:
            if self.is_missing(exc):
                self.check_bucket(remote)
                return None
            raise self.translate(exc, remote, "read") from exc

    def get(self, remote: Remote) -> tuple[bytes, str, dict[str, str]] | None:
        """(bytes, sha256 computed while streaming, metadata) of an object, or None if absent."""
        client = self.client(remote)
        last: BaseException | None = None
        for _attempt in range(self.cfg.max_attempts):
            try:
                resp = client.get_object(Bucket=remote.bucket, Key=remote.key)
            except Exception as exc:
                if self.is_missing(exc):
                    self.check_bucket(remote)
                    return None
                raise self.translate(exc, remote, "read") from exc
            digest = hashlib.sha256()
            chunks = []
            try:  # botocore does not retry a body that breaks mid-stream; this loop does
                for chunk in resp["Body"].iter_chunks(1 * _MiB):
                    digest.update(chunk)
                    chunks.append(chunk)
            except (botocore_exceptions.BotoCoreError, OSError) as exc:
                last = exc
                continue
            data = b"".join(chunks)
            if resp.get("ContentLength") is not None and len(data) != resp["ContentLength"]:
                last = OSError(f"short read: {len(data)} of {resp['ContentLength']} bytes")
                continue
            return data, digest.hexdigest(), dict(resp.get("Metadata") or {})
        raise self.translate(last or RuntimeError("read failed"), remote, "read")

    def pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.cfg.max_concurrency, thread_name_prefix="cdseg-s3")
            return self._executor

    def fetch_range(self, remote: Remote, first: int, last: int | None) -> tuple[bytes, str, dict[str, str]]:
        """One GET (a byte range, or the whole object when `last` is None), body retried if cut off."""
        client = self.client(remote)
        kwargs: dict[str, Any] = {"Bucket": remote.bucket, "Key": remote.key}
        if last is not None:
            kwargs["Range"] = f"bytes={first}-{last}"
        error: BaseException | None = None
        for _attempt in range(self.cfg.max_attempts):
            resp = client.get_object(**kwargs)  # request-level faults: botocore's adaptive retries
            try:
                data = resp["Body"].read()
            except (botocore_exceptions.BotoCoreError, OSError) as exc:  # a body cut off mid-stream
                error = exc
                continue
            want = resp.get("ContentLength")
            if want is not None and len(data) != want:
                error = OSError(f"short read: {len(data)} of {want} bytes")
                continue
            return data, str(resp.get("ETag", "")), dict(resp.get("Metadata") or {})
        raise error or OSError("download failed")

    def delete_keys(self, remote: Remote, keys: list[str]) -> None:
        client = self.client(remote)
        for start in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[start : start + 1000]]
            self.call(remote, "delete objects under", functools.partial(
                client.delete_objects, Bucket=remote.bucket, Delete={"Objects": batch, "Quiet": True}))

    def upload_stream(self, remote: Remote, stream: Any, size: int | None = None,
                      metadata: dict[str, str] | None = None) -> Future[Any]:
        """Start a managed (multipart above the threshold) upload of a readable stream; returns its future."""
        subscribers = [_KnownSize(size)] if size is not None else []
        extra = {"Metadata": metadata} if metadata else {}
        return self.manager(remote).upload(stream, remote.bucket, remote.key, extra_args=extra, subscribers=subscribers)

    def put(self, remote: Remote, body: bytes, metadata: dict[str, str]) -> None:
        """One PutObject (small objects such as a manifest)."""
        self.call(remote, "write", functools.partial(self.client(remote).put_object, Bucket=remote.bucket,
                                                     Key=remote.key, Body=body, Metadata=metadata))

    def delete(self, remote: Remote) -> None:
        """Delete one object (absent is fine)."""
        self.call(remote, "delete", functools.partial(self.client(remote).delete_object, Bucket=remote.bucket,
                                                      Key=remote.key))

    def list_names(self, remote: Remote) -> set[str]:
        """Names directly under a prefix (objects and sub-prefixes), from a delimiter listing."""
        names: set[str] = set()

        def listing() -> None:
            paginator = self.client(remote).get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=remote.bucket, Prefix=remote.prefix, Delimiter="/"):
                names.update(p["Prefix"][len(remote.prefix):].rstrip("/") for p in page.get("CommonPrefixes", []))
                names.update(o["Key"][len(remote.prefix):] for o in page.get("Contents", []))

        self.call(remote, "list", listing)
        return names

#: S3 error codes of an overloaded or failing store (worth retrying later, not bad input)
_UNAVAILABLE_CODES = frozenset({"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "503", "500"})


def _root_cause(exc: BaseException) -> BaseException:
    """Unwrap boto3's S3UploadFailedError / s3transfer wrappers down to the botocore error."""
    seen = 0
    while seen < 5 and not isinstance(exc, StorageError):
        inner = exc.__cause__ or exc.__context__
        if inner is None or not type(exc).__name__.startswith(("S3Upload", "S3Download", "RetriesExceeded")):
            break
        exc = inner
        seen += 1
    return exc


__all__ = ["S3Wire", "make_client", "transfer_config"]
