"""kill -9 of `python -m cdseg train` mid-run, then the same command again: the result equals an uninterrupted run.

Bitwise on CPU: the data order and augmentation are functions of (seed, epoch, index), the RNG is reseeded
from (seed, rank, iteration) every iteration, and the resume state restores weights, optimizer, scheduler,
early stopping and the position in the epoch.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from train._util import cli_args, tiny_cfg, tiny_cli

pytestmark = pytest.mark.usefixtures("clean_env")

OVER = {"method": "mib-cd", "task__step": 0, "trainer__epochs": 3, "trainer__limit_batches": 3,
        "trainer__checkpoint_every_iters": 1}


@pytest.mark.timeout(600)
def test_sigkill_then_rerun_equals_uninterrupted(prepared_dataset: Path, tmp_path: Path) -> None:
    from cdseg.train import run_train

    run_train(tiny_cfg(prepared_dataset, tmp_path / "ref", **OVER))

    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "cdseg", "train", *cli_args(tiny_cli(prepared_dataset, out, **OVER))]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    resume = out / "step-0" / "resume"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if resume.is_dir() and any(p.name.startswith("it-") for p in resume.iterdir()):
            break
        time.sleep(0.02)
    assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    states = sorted(p.name for p in resume.iterdir() if p.name.startswith("it-"))
    assert states and states[-1] < "it-000000009" and not (out / "step-0" / "model").exists()

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resumed at epoch" in done.stderr
    for sub in ("model", "best"):
        a = load_file(str(tmp_path / "ref" / "step-0" / sub / "model.safetensors"))
        b = load_file(str(out / "step-0" / sub / "model.safetensors"))
        assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a), sub
    ha = json.loads((tmp_path / "ref" / "step-0" / "history.json").read_text())
    hb = json.loads((out / "step-0" / "history.json").read_text())
    assert [r["val_miou"] for r in ha] == [r["val_miou"] for r in hb]
