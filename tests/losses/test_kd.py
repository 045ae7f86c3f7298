from __future__ import annotations

import math

import pytest
import torch

from cdseg.config import load_config
from cdseg.losses import KD, KDConfig, UnbiasedKD, build_kd_loss


def test_ukd_hand_computed() -> None:
    q = torch.zeros(1, 2, 1, 1)  # old: bg and class 1, w = (1/2, 1/2)
    z = torch.tensor([0.0, 0.0, math.log(2)]).view(1, 3, 1, 1)  # new: probs (1, 1, 2) / 4
    # collapsed new distribution: bg = (1 + 2)/4, class 1 = 1/4; divided by K = 2 as MiB
    expected = -(0.5 * math.log(0.75) + 0.5 * math.log(0.25)) / 2
    assert UnbiasedKD()(z, q).item() == pytest.approx(expected, rel=1e-6)


def _entropy_over_k(q: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    w = torch.softmax(alpha * q, dim=1)
    return (-(w * torch.log(w)).sum(1) / q.shape[1]).mean()


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_ukd_minimum_is_the_old_entropy(alpha: float) -> None:
    # UKD is a cross-entropy H(w, p)/K, so it is never 0 for a soft teacher: its minimum is H(w)/K, reached
    # when the new model's collapsed distribution (bg + new classes, old classes) equals the old one.
    torch.manual_seed(0)
    k, n_new = 3, 2
    q = torch.randn(2, k, 4, 4)
    t = alpha * q
    split = t[:, :1] - math.log(n_new + 1)
    z = torch.cat([split, t[:, 1:], split.expand(-1, n_new, -1, -1)], dim=1).requires_grad_()
    loss = UnbiasedKD(alpha)(z, q)
    assert loss.item() == pytest.approx(_entropy_over_k(q, alpha).item(), rel=1e-5)
    loss.backward()
    assert z.grad.abs().max() < 1e-6  # a minimum: zero gradient
    for seed in range(5):
        torch.manual_seed(seed)
        other = z.detach() + 0.3 * torch.randn_like(z)
        assert UnbiasedKD(alpha)(other, q) > loss


def test_ukd_mask_and_no_new_classes() -> None:
    torch.manual_seed(0)
    q = torch.randn(1, 2, 2, 2)
    z = torch.randn(1, 2, 2, 2)
    # without new classes UKD is the plain KD over the old outputs
    assert torch.allclose(UnbiasedKD()(z, q), KD()(z, q))
    mask = torch.zeros(1, 2, 2, dtype=torch.bool)
    mask[0, 0, 0] = True
    full = UnbiasedKD()(z[..., :1, :1], q[..., :1, :1])
    assert torch.allclose(UnbiasedKD()(z, q, mask), full)


def test_plain_kd_hand_computed() -> None:
    q = torch.tensor([0.0, math.log(3)]).view(1, 2, 1, 1)  # w = (1/4, 3/4)
    z = torch.tensor([0.0, 0.0, 5.0]).view(1, 3, 1, 1)  # softmax over the first 2 only: (1/2, 1/2)
    assert KD()(z, q).item() == pytest.approx(-(math.log(0.5)) / 2, rel=1e-6)


def test_build_kd_loss_and_alias() -> None:
    assert build_kd_loss(KDConfig()) is None  # neutral default: no distillation
    cfg = load_config(KDConfig, base={"decoder_factor": 10, "unbiased": True})
    assert cfg.weight == 10 and isinstance(build_kd_loss(cfg), UnbiasedKD)
    assert isinstance(build_kd_loss(KDConfig(weight=1)), KD)
