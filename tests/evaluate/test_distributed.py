"""1 process == 2 processes: scenes sharded over two gloo ranks give the same metrics and predictions."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import torch.multiprocessing as mp

from cdseg.cli.main import main


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, port: int, argv: list[str], results: dict[int, int]) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    results[rank] = main(argv)


def _checkpoint(tmp_path: Path) -> str:
    from cdseg.data.isprs import POTSDAM
    from cdseg.models import ModelConfig, build_segmenter
    from cdseg.models.io import save_model
    from cdseg.tasks import get_task

    task = get_task("6s", POTSDAM.manifest_fields())
    torch.manual_seed(0)
    model = build_segmenter(ModelConfig(encoder="resnet18", pretrained=False, norm="bn", decoder_channels=[32, 16, 16, 16]),
                            task.heads(1), ["R", "G", "B", "IR"])
    return save_model(model.eval(), str(tmp_path / "ck"), {"task": "6s", "step": 1, "classes": [["building"], ["tree"]],
                                                           "method": "ft"})


@pytest.mark.slow  # two spawned processes: about 15-30 s on two shared cores
def test_two_ranks_equal_one(prepared_dataset: Path, tmp_path: Path) -> None:
    ck = _checkpoint(tmp_path)
    base = ["test", "--checkpoint", ck, "--dataset", str(prepared_dataset), "--eval.window", "128",
            "--eval.overlap", "32", "--eval.device", "cpu"]
    assert main([*base, "--output", str(tmp_path / "one")]) == 0
    assert len(json.loads((tmp_path / "one" / "step-1" / "eval" / "metrics.json").read_text())["dataset"]["scenes"]) >= 2
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_worker, args=(_free_port(), [*base, "--output", str(tmp_path / "two")], results), nprocs=2, join=True)
    assert dict(results) == {0: 0, 1: 0}
    one, two = (json.loads((tmp_path / d / "step-1" / "eval" / "metrics.json").read_text()) for d in ("one", "two"))
    assert one["confusion_matrix"] == two["confusion_matrix"]
    assert one["fingerprint"] == two["fingerprint"] and two["work"]["world_size"] == 2
    assert one["work"]["pixels_pushed"] == two["work"]["pixels_pushed"]
    for scene in one["dataset"]["scenes"]:
        preds = []
        for d in ("one", "two"):
            with rasterio.open(tmp_path / d / "step-1" / "eval" / "predictions" / f"{scene}.tif") as src:
                preds.append(src.read(1))
        assert np.array_equal(*preds)
