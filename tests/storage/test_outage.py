"""A storage outage is not bad input: `StorageUnavailableError` (still a `StorageError`), and the CLI exits with
`EXIT_RETRYABLE`, in the 128-255 range a job's `ExitCode` restart policy retries; bad input stays exit 2."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import cdseg.storage as storage
from cdseg.cli.main import main
from cdseg.errors import EXIT_RETRYABLE, UserError
from cdseg.storage import StorageError, StorageUnavailableError

from .conftest import configure


def test_the_retryable_code_is_retried_by_exitcode_policies_and_is_no_signal() -> None:
    assert 128 <= EXIT_RETRYABLE <= 255, "PyTorchJob restartPolicy ExitCode retries 128-255 only"
    assert EXIT_RETRYABLE > 128 + 64, "128 + a signal number reads as a kill"


def test_unreachable_endpoint_is_unavailable(s3: dict[str, Any]) -> None:
    from .conftest import _free_port

    configure(f"http://127.0.0.1:{_free_port()}", s3["cache"], max_attempts=2)  # connection refused
    with pytest.raises(StorageUnavailableError) as info:
        storage.read_bytes(storage.join(s3["root"], "x"))
    assert isinstance(info.value, StorageError) and "\n" not in str(info.value)


def test_5xx_after_the_retries_is_unavailable(s3: dict[str, Any]) -> None:
    configure(s3["proxy"].url, s3["cache"], max_attempts=2)
    s3["proxy"].fail(503, 503, 503, 503)
    with pytest.raises(StorageUnavailableError, match="kept failing"):
        storage.read_bytes(storage.join(s3["root"], "x"))


def test_a_missing_object_is_still_bad_input(s3: dict[str, Any]) -> None:
    with pytest.raises(StorageError) as info:
        storage.read_bytes(storage.join(s3["root"], "nothing-here"))
    assert not isinstance(info.value, StorageUnavailableError) and isinstance(info.value, UserError)


def test_cli_exit_codes(s3: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from .conftest import _free_port

    args = ["prepare", "--input", storage.join(s3["root"], "release"), "--output", str(tmp_path / "prepared")]
    # the store is down: retryable
    rc = main([*args, "--storage.endpoint-url", f"http://127.0.0.1:{_free_port()}", "--storage.max-attempts", "1"])
    err = capsys.readouterr().err
    assert rc == EXIT_RETRYABLE, err
    assert "cannot reach the S3 endpoint" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "prepared").exists(), "nothing half-written"
    # the store is up but the release is not there: bad input
    rc = main([*args, "--storage.endpoint-url", s3["proxy"].url])
    assert rc == 2, capsys.readouterr().err
