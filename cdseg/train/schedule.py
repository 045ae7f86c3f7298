"""Learning-rate schedules stepped every iteration over the whole run.

The original stepped CosineAnnealingLR(T_max=10) once per epoch over 100 epochs, so the learning rate
went up and down every 20 epochs (seed-spec §9, bug 5). Here the multiplier is a pure function of the
iteration and of the run's total length, so resuming restores it exactly.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from cdseg.train.config import SchedulerConfig


def lr_factor(cfg: SchedulerConfig, it: int, total: int, iters_per_epoch: int, base_lr: float) -> float:
    """Multiplier of the peak LR at iteration `it` (0-based) of a run of `total` iterations."""
    warm = min(cfg.warmup_iters, max(total - 1, 0))
    if warm and it < warm:
        return cfg.warmup_factor + (1.0 - cfg.warmup_factor) * it / warm
    floor = cfg.min_lr / base_lr if base_lr > 0 else 0.0
    span = max(total - warm, 1)
    t = min(max(it - warm, 0) / span, 1.0)
    if cfg.target == "cosine":
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))
    if cfg.target == "poly":
        return floor + (1.0 - floor) * (1.0 - t) ** cfg.power
    if cfg.target == "exp":
        return float(cfg.gamma ** (max(it - warm, 0) / max(iters_per_epoch, 1)))
    return 1.0


def build_scheduler(optimizer: Optimizer, cfg: SchedulerConfig, total: int, iters_per_epoch: int) -> LambdaLR:
    """A LambdaLR with `lr_factor`; call `.step()` after every optimizer step."""
    base = float(optimizer.param_groups[0]["lr"])
    return LambdaLR(optimizer, lambda it: lr_factor(cfg, it, total, iters_per_epoch, base))
