"""One URI parser, `cdseg.storage`: no other module parses schemes, and every command agrees on what a URI is
(`S3://` is remote everywhere, `gs://` is the same one-line error everywhere)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import cdseg
from cdseg.storage import StorageError

ROOT = Path(cdseg.__file__).parent
# scheme handling by hand: a prefix stripped or tested, a split on "://", a search for it
_BY_HAND = re.compile(r"""removeprefix\(["']file://|startswith\(["'](s3|file|minio)://|split\(["']://|["']://["'] in """)


def test_no_module_outside_storage_parses_uris() -> None:
    assert not (ROOT / "data" / "uris.py").exists()
    offenders = [f"{path.relative_to(ROOT)}:{i}" for path in sorted(ROOT.rglob("*.py"))
                 if "storage" not in path.relative_to(ROOT).parts
                 for i, line in enumerate(path.read_text().splitlines(), 1) if _BY_HAND.search(line)]
    assert offenders == []


def test_every_reader_agrees_on_the_scheme(tmp_path: Path) -> None:
    from cdseg.data.ownership import _parts
    from cdseg.models.encoder import _local_weights
    from cdseg.train.output import StepOutput

    assert StepOutput("S3://bucket/run", 0).remote and StepOutput("minio://bucket/run", 0).remote
    assert StepOutput("S3://bucket/run", 0).uri == "s3://bucket/run/step-0"
    assert not StepOutput(f"file://{tmp_path}/run", 0).remote
    assert StepOutput(f"file://{tmp_path}/run", 0).local == tmp_path / "run" / "step-0"
    assert _parts("S3://bucket/x") == _parts("s3://bucket/x/")
    for bad in ("gs://bucket/x", "s3://Bad_Bucket/x"):
        with pytest.raises(StorageError):
            StepOutput(bad, 0)
        with pytest.raises(StorageError):
            _local_weights(bad)
        with pytest.raises(StorageError):
            _parts(bad)
