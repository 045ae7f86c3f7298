"""Parse and join URIs: local paths, file://, s3://bucket/key and minio://bucket/key."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from cdseg.storage.errors import StorageError

REMOTE_SCHEMES = ("s3", "minio")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# S3 bucket naming rules (lower case, digits, dots, hyphens; 3-63 characters).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_FIX = "use a local path, file:///abs/path, s3://bucket/key or minio://bucket/key"


@dataclass(frozen=True)
class Remote:
    """An object or prefix in an S3-compatible store."""

    scheme: str
    bucket: str
    key: str  # no leading slash; may be "" (the bucket root); never ends with "/"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.bucket}/{self.key}" if self.key else f"{self.scheme}://{self.bucket}"

    def child(self, *parts: str) -> Remote:
        """The object or prefix `parts` below this one."""
        clean = [p.strip("/") for p in parts if p.strip("/")]
        key = "/".join(([self.key] if self.key else []) + clean)
        return Remote(self.scheme, self.bucket, key)

    @property
    def prefix(self) -> str:
        """The key as a folder prefix (`a/b/`), or "" at the bucket root."""
        return self.key + "/" if self.key else ""


def scheme_of(uri: str | Path) -> str:
    """The URI's scheme ("" for a plain local path)."""
    if isinstance(uri, Path):
        return ""
    match = _SCHEME.match(uri)
    return match.group(1).lower() if match else ""


def is_remote(uri: str | Path) -> bool:
    """True for s3:// and minio:// URIs, False for local paths and file:// (bad schemes raise)."""
    scheme = scheme_of(uri)
    if scheme in ("", "file"):
        return False
    if scheme in REMOTE_SCHEMES:
        return True
    raise StorageError(f"unsupported URI scheme {scheme!r} in {uri!r}; {_FIX}")


def parse_remote(uri: str) -> Remote:
    """Split an s3:// or minio:// URI into scheme, bucket and key, validating the bucket name."""
    scheme = scheme_of(uri)
    if scheme not in REMOTE_SCHEMES:
        raise StorageError(f"{uri!r} is not an s3:// or minio:// URI; {_FIX}")
    rest = uri[len(scheme) + 3 :]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise StorageError(f"URI {uri!r} has no bucket; write it as {scheme}://BUCKET/key")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise StorageError(
            f"URI {uri!r} has an invalid bucket name {bucket!r}; bucket names are 3-63 lower-case letters, digits, '.' or '-'"
        )
    if "//" in key.rstrip("/"):
        raise StorageError(f"URI {uri!r} has an empty path segment ('//'); remove the doubled slash")
    key = key.strip("/")
    if any(part in (".", "..") for part in key.split("/")):
        raise StorageError(f"URI {uri!r} contains '.' or '..' segments; object keys must be plain names")
    return Remote(scheme, bucket, key)


def local_path(uri: str | Path) -> Path:
    """The local path of a plain path or file:// URI."""
    if isinstance(uri, Path):
        return uri
    scheme = scheme_of(uri)
    if scheme == "file":
        rest = uri[len("file://") :]
        if rest and not rest.startswith("/"):
            raise StorageError(f"file URI {uri!r} must be absolute (file:///abs/path); host names are not supported")
        return Path(unquote(rest or "/"))
    if scheme:
        raise StorageError(f"{uri!r} is not a local path; {_FIX}")
    if not uri:
        raise StorageError("empty path; pass a local folder or an s3:// URI")
    return Path(uri).expanduser()


def join(uri: str | Path, *parts: str) -> str:
    """`uri` with `parts` appended, keeping its scheme (`join("s3://b/x", "y", "z.json")`)."""
    if is_remote(uri):
        return str(parse_remote(str(uri)).child(*parts))
    if scheme_of(uri) == "file":
        return "file://" + str(local_path(uri).joinpath(*parts))
    return str(Path(uri).joinpath(*parts))
