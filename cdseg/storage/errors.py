"""The storage layer's error: bad URIs, unreachable endpoints, missing objects, failed checksums."""

from __future__ import annotations

from cdseg.errors import UserError


class StorageError(UserError):
    """A URI cannot be read or written; the message names the URI and the fix (exit code 2)."""


class IntegrityError(StorageError):
    """An object's bytes do not match the sha256 recorded when it was written."""
