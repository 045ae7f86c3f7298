"""GPU only (marker `gpu`, skipped without CUDA): NCCL process group of one rank, AMP bf16 / fp16 steps."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch

from train._util import tiny_cfg

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_nccl_world_size_one_with_amp_bf16(prepared_dataset: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from cdseg.train import distributed as D
    from cdseg.train import run_train

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    seen = {}
    original = D.init_distributed

    def spy(*args: object, **kwargs: object) -> D.DistInfo:
        info = original(*args, **kwargs)  # type: ignore[arg-type]
        seen["info"] = info
        return info

    monkeypatch.setattr(D, "init_distributed", spy)
    cfg = tiny_cfg(prepared_dataset, tmp_path / "r", method="mib-cd", task__step=0, trainer__amp=True,
                   trainer__amp_dtype="bf16", model__norm="syncbn", trainer__device="auto")
    uri = run_train(cfg)
    assert seen["info"].backend == "nccl" and seen["info"].device.type == "cuda"
    assert json.loads((Path(uri) / "model.json").read_text())["step"] == 0
    assert not D.is_initialized()  # run_train owned the group and destroyed it
    assert os.environ["WORLD_SIZE"] == "1"


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_amp_train_step(dtype: str) -> None:
    from cdseg.losses import AugConfig, CEConfig, KDConfig, build_kd_loss, build_seg_loss
    from cdseg.models import ModelConfig, build_segmenter
    from cdseg.train.step import MethodStep

    cfg = ModelConfig(encoder="resnet18", pretrained=False, norm="bn", act="relu")
    student = build_segmenter(cfg, [3, 2], ["R", "G", "B"]).cuda()
    teacher = build_segmenter(cfg, [3], ["R", "G", "B"]).cuda()
    step = MethodStep(student, teacher, build_seg_loss(CEConfig(unbiased=True), 3),
                      build_kd_loss(KDConfig(unbiased=True, weight=10.0)), 10.0, AugConfig(factor=0.1, factor_icl=0.1))
    opt = torch.optim.AdamW(student.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda") if dtype == "fp16" else None
    x = torch.rand(2, 3, 64, 64, device="cuda")
    y = torch.randint(0, 5, (2, 64, 64), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16 if dtype == "bf16" else torch.float16):
        terms = step(x, y, 0)
    loss = terms["loss"]
    assert torch.isfinite(loss)
    (scaler.scale(loss) if scaler else loss).backward()
    if scaler:
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()
    assert all(torch.isfinite(p).all() for p in student.parameters())
