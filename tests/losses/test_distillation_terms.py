"""LwF-MC, ILT and the per-class BCE: each against a straightforward computation of its formula, plus invariants."""

from __future__ import annotations

import math

import torch

from cdseg.losses.ce import BinaryCrossEntropy
from cdseg.losses.feature import feature_distillation
from cdseg.losses.kd import KD
from cdseg.losses.multiclass import multiclass_distillation


def _sig(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 2


def test_multiclass_distillation_matches_the_formula() -> None:
    z, q = _rand(2, 5, 3, 4), _rand(2, 3, 3, 4, seed=1)
    total, n = 0.0, 0
    for b in range(2):
        for i in range(3):
            for j in range(4):
                s = 0.0
                for c in range(3):
                    p, t = _sig(float(z[b, c, i, j])), _sig(float(q[b, c, i, j]))
                    s -= t * math.log(p) + (1 - t) * math.log(1 - p)
                total, n = total + s, n + 1
    assert abs(float(multiclass_distillation(z, q)) - total / n) < 1e-6 * max(1.0, total / n)


def test_multiclass_distillation_is_minimal_where_the_student_equals_the_teacher() -> None:
    q = _rand(2, 3, 4, 4, seed=2)
    z = torch.cat([q.clone(), _rand(2, 2, 4, 4, seed=3)], dim=1).requires_grad_(True)
    multiclass_distillation(z, q).backward()
    assert z.grad is not None and z.grad.abs().max() < 1e-6


def test_plain_kd_is_minimal_where_the_student_equals_the_teacher() -> None:
    q = _rand(2, 3, 4, 4, seed=4)
    z = torch.cat([q.clone(), _rand(2, 2, 4, 4, seed=5)], dim=1).requires_grad_(True)
    KD()(z, q).backward()
    assert z.grad is not None and z.grad[:, :3].abs().max() < 1e-6


def test_feature_distillation_matches_the_formula_and_is_zero_for_equal_features() -> None:
    a, b = _rand(2, 4, 3, 3), _rand(2, 4, 3, 3, seed=6)
    ref = sum(float(a.flatten()[i] - b.flatten()[i]) ** 2 for i in range(a.numel())) / a.numel()
    assert abs(float(feature_distillation(a, b)) - ref) < 1e-6 * max(1.0, ref)
    assert float(feature_distillation(a, a.clone())) == 0.0


def test_binary_cross_entropy_matches_the_formula() -> None:
    z = _rand(2, 4, 3, 3, seed=7)
    y = torch.randint(0, 4, (2, 3, 3), generator=torch.Generator().manual_seed(8))
    y[0, 0, 0] = 255
    total, n = 0.0, 0
    for b in range(2):
        for i in range(3):
            for j in range(3):
                if int(y[b, i, j]) == 255:
                    continue
                for c in range(4):
                    p, t = _sig(float(z[b, c, i, j])), float(int(y[b, i, j]) == c)
                    total -= t * math.log(p) + (1 - t) * math.log(1 - p)
                n += 1
    assert abs(float(BinaryCrossEntropy()(z, y)) - total / n) < 1e-6 * max(1.0, total / n)
