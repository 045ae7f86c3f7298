"""`cdseg.train.torchrun`: torchrun whose exit code tells a job's restart policy whether to retry."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cdseg.errors import EXIT_RETRYABLE
from cdseg.train.torchrun import exit_code


@pytest.mark.parametrize(("codes", "expected"), [
    ([EXIT_RETRYABLE], EXIT_RETRYABLE),
    ([1, EXIT_RETRYABLE], EXIT_RETRYABLE),   # any rank's outage makes the step retryable
    ([-9], 137),                             # a rank killed by SIGKILL (the OOM killer) reads as 137
    ([2], 2),                                # bad input stays permanent
    ([0], 1),
])
def test_exit_code(codes: list[int], expected: int) -> None:
    assert exit_code(codes) == expected


@pytest.mark.parametrize("rank_exit", [EXIT_RETRYABLE, 2])
def test_a_ranks_code_reaches_the_pod(tmp_path: Path, rank_exit: int) -> None:
    """Where plain torchrun exits 1, the wrapper exits with the rank's code (one real torchrun, one process)."""
    script = tmp_path / "rank.py"
    script.write_text(f"import sys\nsys.exit({rank_exit})\n")
    args = ["--standalone", "--nproc-per-node", "1", "--max-restarts", "0", str(script)]
    plain = subprocess.run([sys.executable, "-m", "torch.distributed.run", *args], capture_output=True, timeout=120)
    wrapped = subprocess.run([sys.executable, "-m", "cdseg.train.torchrun", *args], capture_output=True, timeout=120)
    assert plain.returncode == 1, "torchrun hides the rank's code (why the wrapper exists)"
    assert wrapped.returncode == rank_exit, wrapped.stderr.decode()[-2000:]
