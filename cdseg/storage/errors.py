"""The storage layer's error: bad URIs, unreachable endpoints, missing objects, failed checksums."""

from __future__ import annotations

from cdseg.errors import TransientError, UserError


class StorageError(UserError):
    """A URI cannot be read or written; the message names the URI and the fix (exit code 2)."""


class StorageUnavailableError(StorageError, TransientError):
    """The object store cannot be reached or keeps failing (network, 5xx, throttling) after the client's retries.

    A `StorageError` (callers that handle storage failures see it), but not bad input: the CLI exits
    `cdseg.errors.EXIT_RETRYABLE`, which a job's restart policy retries."""


class IntegrityError(StorageError):
    """An object's bytes do not match the sha256 recorded when it was written."""
