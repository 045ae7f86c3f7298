"""The output lease: one holder at a time, its identity in the refusal, nothing left behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cdseg.utils.lease import OutputBusy, lock_path, output_lease, remove_stale


def test_one_holder_at_a_time(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b" / "out"
    with output_lease(out) as lock:
        assert lock == lock_path(out) and lock.is_file()
        busy = rf"--output {out} is in use by another cdseg run \(host .+, pid {os.getpid()}, started .+Z\); wait for it"
        with pytest.raises(OutputBusy, match=busy), output_lease(out):
            pass
    assert not (tmp_path / "a").exists()  # lock file and the folders made for it are gone
    with output_lease(out, "output"):  # free again
        pass


def test_stale_temporaries_are_only_this_outputs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    for name in (".out.tmp-1", ".out.old-2", ".outer.tmp-3", "out"):
        (tmp_path / name).mkdir()
    (tmp_path / ".out.tmp-file").write_text("x")
    assert remove_stale(out) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [".outer.tmp-3", "out"]
