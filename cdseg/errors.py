"""Exception classes shared by every layer.

`UserError` (and subclasses) means bad usage or bad input: the CLI prints its message as one line
and exits 2. Messages name the bad value (file, field, URI), what was expected and the fix.
Anything else is a bug or an environment failure and exits 1.
"""

from __future__ import annotations


class CdsegError(Exception):
    """Base class of all cdseg errors."""


class UserError(CdsegError):
    """Bad usage or bad input; the message is shown to the user as one line (exit code 2)."""


#: exit code of a retryable failure (an outage of object storage or the network): in 128-255, the range a
#: PyTorchJob's `ExitCode` restart policy retries (1-127 are permanent), and above the signal numbers
#: (128 + 1..64) so that it is not mistaken for a kill; the trainer resumes from its newest checkpoint
EXIT_RETRYABLE = 200


class TransientError(CdsegError):
    """A service the command needs (object storage, the network) is unavailable: not bad input; retrying later
    may succeed. The CLI prints one line and exits `EXIT_RETRYABLE`."""


class ConfigError(UserError):
    """An option has a value that is not allowed."""


class DataError(UserError):
    """Input data (a release, a prepared dataset, a task file) is missing or malformed."""


class CheckpointError(UserError):
    """A checkpoint is missing, corrupted or does not match what the step expects."""


class MissingDependencyError(UserError):
    """An optional dependency is needed for what was asked but is not installed."""

    def __init__(self, module: str, feature: str, install: str) -> None:
        super().__init__(f"{feature} needs the Python package '{module}', which is not installed; install it with: {install}")
        self.module = module
