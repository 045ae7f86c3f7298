"""Logging set-up, done once by entry points: text for people, JSON lines for pods."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any, Literal

LogFormat = Literal["text", "json"]

_RESERVED = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, rank and any `extra=` fields."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        rank = os.environ.get("RANK")
        if rank is not None:
            payload["rank"] = int(rank)
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                payload[key] = value if isinstance(value, (int, float, str, bool, type(None))) else str(value)
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload)


def init_logging(fmt: LogFormat = "text", level: str | int = "INFO") -> None:
    """Configure the root logger once (stderr); safe to call again, it replaces the handler."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_cdseg", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._cdseg = True  # type: ignore[attr-defined]
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        rank = os.environ.get("RANK")
        prefix = f"[rank{rank}] " if rank not in (None, "0") else ""
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)-7s {prefix}%(name)s: %(message)s", "%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("urllib3", "botocore", "boto3", "s3transfer", "matplotlib", "PIL", "rasterio", "fiona", "kfp", "timm"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
