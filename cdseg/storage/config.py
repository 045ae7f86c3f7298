"""`StorageConfig`: where S3-compatible stores are, and where downloads are cached."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, field_validator

from cdseg.config.base import Section

#: KFP's bundled MinIO, used for `minio://` URIs when no endpoint is configured anywhere.
KFP_MINIO_ENDPOINT = "http://minio-service.kubeflow:9000"


class StorageConfig(Section):
    """Object storage (s3://, minio://) settings; credentials come from the standard AWS chain."""

    endpoint_url: str | None = Field(
       default=None,
        description="S3-compatible endpoint URL (MinIO: http://minio:9000); default: AWS_ENDPOINT_URL_S3, "
        "AWS_ENDPOINT_URL, else AWS itself (minio:// URIs: KFP's MinIO service)",
    )
    region: str | None = Field(default=None, description="S3 region; default: AWS_REGION, AWS_DEFAULT_REGION, else us-east-1")
    cache_dir: str | None = Field(
       default=None, description="local download cache, keyed by sha256; default: CDSEG_CACHE_DIR, else ~/.cache/cdseg"
    )
    cache_max_gb: float = Field(
       default=100.0, ge=0, description="size cap of the download cache (GB; 0: no cap): after a download, the objects "
       "used longest ago (and not within the last hour) are evicted until the cache fits"
    )
    multipart_threshold_mb: float = Field(
       default=64.0, gt=0, description="objects at least this large (MiB) are transferred in parallel parts"
    )
    multipart_chunksize_mb: float = Field(default=16.0, ge=5, description="size of one multipart part (MiB; S3 minimum 5)")
    max_concurrency: int = Field(default=8, ge=1, le=64, description="parallel part transfers per object (threads)")
    max_attempts: int = Field(default=8, ge=1, le=30, description="attempts per S3 request (adaptive retry mode)")

    @field_validator("endpoint_url")
    @classmethod
    def _check_endpoint(cls, value: str | None) -> str | None:
        if value is not None and value != "" and not value.startswith(("http://", "https://")):
            raise ValueError(f"endpoint_url {value!r} must start with http:// or https:// (e.g. http://minio:9000)")
        return value or None

    def resolved_cache_dir(self) -> Path:
        """The cache folder: the config's, else CDSEG_CACHE_DIR, else ~/.cache/cdseg."""
        raw = self.cache_dir or os.environ.get("CDSEG_CACHE_DIR") or str(Path.home() / ".cache" / "cdseg")
        return Path(raw).expanduser()

    def resolved_endpoint(self, scheme: str = "s3") -> str | None:
        """The endpoint for `scheme` URIs: config, then AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL."""
        endpoint = self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint is None and scheme == "minio":
            endpoint = KFP_MINIO_ENDPOINT
        return endpoint or None

    def resolved_region(self) -> str:
        """The region: config, then AWS_REGION / AWS_DEFAULT_REGION, else us-east-1."""
        return self.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
