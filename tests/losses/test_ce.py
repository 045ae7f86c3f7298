from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cdseg.losses import CEConfig, CrossEntropy, UnbiasedCrossEntropy, build_seg_loss


def _pixels(rows: list[list[float]]) -> torch.Tensor:
    """Logits for a 1 x N image from per-pixel rows: [1, C, 1, N]."""
    return torch.tensor(rows).T.unsqueeze(0).unsqueeze(2)


def test_ce_hand_computed_and_ignore() -> None:
    z = _pixels([[0, math.log(2), math.log(3)], [0, 0, 0]])  # probs (1/6, 2/6, 3/6) and uniform
    y = torch.tensor([[[2, 255]]])
    assert CrossEntropy()(z, y).item() == pytest.approx(-math.log(0.5))
    y = torch.tensor([[[2, 0]]])
    assert CrossEntropy()(z, y).item() == pytest.approx((-math.log(0.5) - math.log(1 / 3)) / 2)


def test_uce_hand_computed() -> None:
    z = _pixels([[0, math.log(2), math.log(3), math.log(4)]] * 3)  # probs 1,2,3,4 / 10
    y = torch.tensor([[[0, 1, 3]]])
    # K = 2 old outputs (bg, class 1): bg and class 1 both score p0 + p1 = 3/10
    expected = (-math.log(0.3) - math.log(0.3) - math.log(0.4)) / 3
    assert UnbiasedCrossEntropy(2)(z, y).item() == pytest.approx(expected, rel=1e-6)


def test_uce_equals_ce_with_only_background_old() -> None:
    torch.manual_seed(0)
    z = torch.randn(2, 5, 4, 4)
    y = torch.randint(0, 5, (2, 4, 4))
    y[0, 0, 0] = 255
    assert torch.allclose(UnbiasedCrossEntropy(1)(z, y), F.cross_entropy(z, y, ignore_index=255))
    assert torch.allclose(CrossEntropy()(z, y), F.cross_entropy(z, y, ignore_index=255))


def test_all_ignored_is_zero_with_a_graph() -> None:
    z = torch.randn(1, 3, 2, 2, requires_grad=True)
    y = torch.full((1, 2, 2), 255)
    for loss in (CrossEntropy()(z, y), UnbiasedCrossEntropy(2)(z, y)):
        assert loss.item() == 0.0
        loss.backward()


def test_low_precision_logits_give_float32_loss() -> None:
    z = torch.randn(1, 3, 4, 4).to(torch.bfloat16)
    y = torch.randint(0, 3, (1, 4, 4))
    assert UnbiasedCrossEntropy(2)(z, y).dtype == torch.float32


def test_build_seg_loss() -> None:
    assert isinstance(build_seg_loss(CEConfig(unbiased=True), 0), CrossEntropy)  # step 0: nothing old
    loss = build_seg_loss(CEConfig(unbiased=True), 3)
    assert isinstance(loss, UnbiasedCrossEntropy) and loss.old_classes == 3
    assert isinstance(build_seg_loss(CEConfig(), 3), CrossEntropy)
    with pytest.raises(ValueError, match="old_classes"):
        UnbiasedCrossEntropy(0)
