"""One process with batch 2B == two gloo processes with batch B each (DDP, all-reduced BN statistics).

CPU/gloo has no SyncBatchNorm (CUDA only), so `--model.norm syncbn` on CPU converts BatchNorm2d layers to
`cdseg.train.distributed.AllReduceBatchNorm` (batch statistics summed with a differentiable all-reduce):
the two-process run normalises exactly like the one-process run. Dropout is switched off (masks are drawn
per rank) and SGD is used, so that float summation order cannot be amplified by Adam's sign-like first steps.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from train._util import tiny_cfg

pytestmark = pytest.mark.usefixtures("clean_env")

COMMON = {"method": "mib-cd", "task__step": 1, "model__norm": "syncbn", "model__dropout": 0.0, "trainer__epochs": 2,
          "trainer__limit_batches": 2, "optimizer__target": "sgd", "optimizer__lr": 0.01}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rank_main(rank: int, world: int, port: int, dataset: str, out: str, over: dict[str, Any]) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    from cdseg.train import run_train

    run_train(tiny_cfg(Path(dataset), Path(out), **over))


@pytest.mark.timeout(600)
def test_one_process_equals_two_gloo_processes(prepared_dataset: Path, step0_run: Path, tmp_path: Path) -> None:
    for name in ("one", "two"):
        shutil.copytree(step0_run / "step-0", tmp_path / name / "step-0")
    from cdseg.train import run_train

    run_train(tiny_cfg(prepared_dataset, tmp_path / "one", trainer__batch_size=4, **COMMON))
    mp.start_processes(_rank_main, args=(2, _free_port(), str(prepared_dataset), str(tmp_path / "two"),
                                         {"trainer__batch_size": 2, **COMMON}), nprocs=2, start_method="spawn")
    a = load_file(str(tmp_path / "one" / "step-1" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "step-1" / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    changed = 0
    prev = load_file(str(step0_run / "step-0" / "model" / "model.safetensors"))
    for k in a:
        assert torch.allclose(a[k].double(), b[k].double(), rtol=1e-4, atol=1e-5), k
        changed += int(k in prev and prev[k].shape == a[k].shape and not torch.equal(prev[k], a[k]))
    assert changed > 10  # training did move the weights
    ha = json.loads((tmp_path / "one" / "step-1" / "history.json").read_text())
    hb = json.loads((tmp_path / "two" / "step-1" / "history.json").read_text())
    for ra, rb in zip(ha, hb, strict=True):
        for key in ("train_loss", "train_seg", "train_kd", "train_cd", "val_miou", "val_loss"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-4, abs=1e-6), key


@pytest.mark.timeout(600)
def test_torchrun_two_processes_from_the_cli(prepared_dataset: Path, tmp_path: Path) -> None:
    """`torchrun --standalone --nproc-per-node 2 -m cdseg train ...`: env:// rendezvous, gloo, rank 0 writes."""
    import subprocess
    import sys

    from train._util import cli_args, tiny_cli

    cli = tiny_cli(prepared_dataset, tmp_path / "r", method="mib-cd", task__step=0, model__norm="syncbn",
                   trainer__epochs=1, data__workers=1)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "cdseg",
           "train", *cli_args(cli)]
    done = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=500)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "on cpu x2" in done.stderr
    card = json.loads((tmp_path / "r" / "step-0" / "model" / "model.json").read_text())
    assert card["step"] == 0 and card["method"] == "mib-cd"
