"""`cdseg bench ddp`: DDP training steps under torchrun, against the same steps in one process of the same run.

Run as `torchrun --nproc-per-node 2 -m cdseg bench ddp` (any world size; all ranks may share one device,
`--device cuda:0`, which NCCL may refuse: the error is then the finding). Each rank times
`--iters` ft steps of the segmenter with DDP (gradient all-reduce every step) interleaved with the same
steps without DDP on its own copy, so the ratio is DDP's cost on this machine, load included. Rank 0
prints the figures; every rank reduces its medians so rank 0 reports the slowest.
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Any

import torch
from pydantic import Field

from cdseg.bench.timing import interleave
from cdseg.config.base import Section

log = logging.getLogger(__name__)


class BenchDdpConfig(Section):
    """Options of `cdseg bench ddp` (random data and weights: speed only)."""

    encoder: str = Field("resnet18", description="timm encoder")
    size: int = Field(128, ge=32, description="crop size (pixels)")
    batch_size: int = Field(4, ge=1, description="images per rank and step")
    classes: int = Field(6, ge=2, description="model outputs")
    iters: int = Field(5, ge=1, description="timed rounds (one DDP step and one plain step each)")
    warmup: int = Field(1, ge=0, description="untimed rounds first")
    amp: bool = Field(False, description="bf16 autocast on CUDA")
    device: str = Field("auto", description="auto (cuda:LOCAL_RANK or cpu), cpu, cuda:N (cuda:0: every rank on one GPU)")
    output: str | None = Field(None, description="rank 0 also writes the figures as JSON to this file")


def _step(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, amp: bool,
          r: int) -> None:
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp and x.device.type == "cuda"):
        loss = torch.nn.functional.cross_entropy(model(x)[0].float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def run_bench_ddp(cfg: BenchDdpConfig) -> dict[str, Any]:
    """Time DDP steps against plain steps on every rank; return rank 0's view (slowest rank's medians)."""
    from cdseg.models import ModelConfig, build_segmenter
    from cdseg.train import distributed as D

    info = D.init_distributed(cfg.device, timeout_s=120)
    try:
        torch.manual_seed(0)
        mcfg = ModelConfig(encoder=cfg.encoder, pretrained=False, norm="bn")
        models = {k: build_segmenter(mcfg, [cfg.classes], ["R", "G", "B"]).to(info.device) for k in ("ddp", "plain")}
        wrapped = {"ddp": D.wrap_ddp(models["ddp"], info), "plain": models["plain"]}
        opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-4) for k, m in models.items()}
        g = torch.Generator().manual_seed(1 + info.rank)
        x = torch.rand(cfg.batch_size, 3, cfg.size, cfg.size, generator=g).to(info.device)
        y = torch.randint(0, cfg.classes, (cfg.batch_size, cfg.size, cfg.size), generator=g).to(info.device)
        cuda = info.device.type == "cuda"
        sync = (lambda: torch.cuda.synchronize(info.device)) if cuda else None
        variants = {k: functools.partial(_step, wrapped[k], opts[k], x, y, cfg.amp) for k in ("ddp", "plain")}
        t = interleave(variants, cfg.iters, warmup=cfg.warmup, sync=sync)
        slowest = torch.tensor([t.median("ddp"), t.median("plain")], dtype=torch.float64, device=info.device)
        D.all_reduce_max(slowest, info)
        return {"world_size": info.world_size, "backend": info.backend, "device": str(info.device),
                "ddp_step_s": float(slowest[0]), "plain_step_s": float(slowest[1]),
                "ddp_over_plain": t.ratio("ddp", "plain").as_dict(), "rank": info.rank, "rounds": cfg.iters}
    finally:
        D.destroy()


def run_and_print(cfg: BenchDdpConfig) -> int:
    """CLI entry: run; rank 0 prints (and writes the JSON if asked)."""
    result = run_bench_ddp(cfg)
    if result["rank"] == 0:
        r = result["ddp_over_plain"]
        print(f"ddp: {result['world_size']} process(es), backend {result['backend']}, {result['device']}: DDP step "
              f"{result['ddp_step_s']:.4f} s, plain step {result['plain_step_s']:.4f} s (slowest rank), DDP / plain "
              f"{r['median']:.2f} [{r['q1']:.2f}-{r['q3']:.2f}] over {result['rounds']} interleaved rounds")
        if cfg.output:
            from cdseg.storage import write_text

            write_text(cfg.output, json.dumps(result, indent=2) + "\n")
    return 0
