"""`cdseg bench ddp` under torchrun with two gloo processes (speed is reported, not asserted)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_bench_ddp_two_processes_report_the_slowest_rank(tmp_path: Path) -> None:
    out = tmp_path / "ddp.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                           "--master-port", str(_free_port()), "-m", "cdseg", "bench", "ddp", "--encoder", "test_resnet",
                           "--size", "32", "--batch-size", "2", "--iters", "2", "--device", "cpu", "--output", str(out)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["world_size"] == 2 and result["backend"] == "gloo" and result["rank"] == 0
    assert result["ddp_over_plain"]["rounds"] == 2 and result["ddp_step_s"] > 0
    assert proc.stdout.count("ddp: 2 process(es)") == 1  # rank 0 only
