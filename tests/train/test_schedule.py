"""LR schedules are stepped per iteration over the whole run (the original's cosine restarted every 20 epochs)."""

from __future__ import annotations

import math

import pytest
import torch

from cdseg.train.config import SchedulerConfig
from cdseg.train.schedule import build_scheduler, lr_factor


def _lrs(cfg: SchedulerConfig, total: int, per_epoch: int = 10) -> list[float]:
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = build_scheduler(opt, cfg, total, per_epoch)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_cosine_decays_once_over_the_run() -> None:
    lrs = _lrs(SchedulerConfig(target="cosine"), 1000)
    assert lrs[0] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))  # never goes back up (bug 5)
    assert lrs[500] == pytest.approx(5e-4, rel=1e-2)
    assert lrs[-1] < 1e-7


def test_warmup_is_linear_then_peak() -> None:
    cfg = SchedulerConfig(target="cosine", warmup_iters=10, warmup_factor=0.1)
    lrs = _lrs(cfg, 100)
    assert lrs[0] == pytest.approx(1e-4)
    assert lrs[5] == pytest.approx(1e-4 + 0.5 * 9e-4)
    assert lrs[10] == pytest.approx(1e-3)
    assert max(lrs) == pytest.approx(1e-3)


def test_poly_min_lr_and_exp() -> None:
    cfg = SchedulerConfig(target="poly", power=1.0, min_lr=1e-4)
    assert lr_factor(cfg, 50, 100, 10, 1e-3) == pytest.approx(0.1 + 0.9 * 0.5)
    exp = SchedulerConfig(target="exp", gamma=0.5)
    assert lr_factor(exp, 20, 100, 10, 1e-3) == pytest.approx(0.25)  # two epochs
    assert lr_factor(SchedulerConfig(target="constant"), 77, 100, 10, 1e-3) == 1.0


def test_factor_is_a_function_of_the_iteration_only() -> None:
    cfg = SchedulerConfig(target="cosine", warmup_iters=5)
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    s1 = build_scheduler(opt, cfg, 100, 10)
    for _ in range(37):
        opt.step()
        s1.step()
    opt2 = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    s2 = build_scheduler(opt2, cfg, 100, 10)
    s2.load_state_dict(s1.state_dict())
    assert s2.get_last_lr() == s1.get_last_lr()
    assert math.isclose(s1.get_last_lr()[0], 1e-3 * lr_factor(cfg, 37, 100, 10, 1e-3))
