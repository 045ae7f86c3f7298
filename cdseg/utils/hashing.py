"""sha256 of local files: the one checksum of cdseg (prepared datasets, model cards, storage manifests)."""

from __future__ import annotations

import hashlib
from pathlib import Path

_CHUNK = 1 << 22  # 4 MiB: large enough that hashlib releases the GIL and the page cache streams


def sha256_file(path: str | Path) -> str:
    """The hex sha256 of a local file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
