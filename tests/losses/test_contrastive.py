from __future__ import annotations

import pytest
import torch
from torch import nn

from cdseg.losses import (
    AugConfig,
    ContrastiveDistillation,
    FreeRotation,
    contrastive_terms,
    sample_transform,
    transform_batch,
)
from cdseg.models.d4 import D4, ROTATIONS, D4Element


def test_aug_defaults_are_neutral() -> None:
    cfg = AugConfig()
    assert (cfg.factor, cfg.factor_icl, cfg.apply) == (0.0, 0.0, False)
    assert AugConfig(factor=0.1).apply


def test_cd_is_zero_for_an_equivariant_feature_map() -> None:
    torch.manual_seed(0)
    f = nn.Conv2d(3, 8, kernel_size=1)  # pointwise, hence equivariant to every pixel permutation
    x = torch.rand(2, 3, 6, 6)
    for g in D4:
        terms = contrastive_terms(f(x), f(g.apply(x)), f(x), g)
        assert terms["cd_self"].item() < 1e-12 and terms["cd_old"].item() < 1e-12, g


def test_cd_is_positive_for_a_non_equivariant_map() -> None:
    torch.manual_seed(0)
    f = nn.Conv2d(3, 8, kernel_size=3, padding=1)
    x = torch.rand(2, 3, 6, 6)
    g = D4Element(False, 1)
    assert contrastive_terms(f(x), f(g.apply(x)), None, g)["cd_self"].item() > 1e-4


def test_terms_hand_computed_and_gradients() -> None:
    g = D4Element(True, 0)
    f_x = torch.ones(1, 2, 2, 2, requires_grad=True)
    f_gx = torch.zeros(1, 2, 2, 2, requires_grad=True)
    f_old = torch.full((1, 2, 2, 2), 3.0, requires_grad=True)
    cd = ContrastiveDistillation(AugConfig(factor=0.1, factor_icl=10.0))
    out = cd(f_x, f_gx, f_old, g)
    assert out["cd_self"].item() == 1.0 and out["cd_old"].item() == 9.0
    assert out["cd"].item() == pytest.approx(0.1 * 1 + 10 * 9)
    out["cd"].backward()
    assert f_x.grad is not None and f_gx.grad is not None  # both sides of the self term learn
    assert f_old.grad is None  # the teacher is never trained


def test_old_term_skipped_without_weight_or_features() -> None:
    f = torch.rand(1, 2, 2, 2)
    g = D4[5]
    assert "cd_old" not in ContrastiveDistillation(AugConfig(factor=1.0))(f, g.apply(f), f, g)
    assert "cd_old" not in contrastive_terms(f, g.apply(f), None, g)


def test_sample_transform() -> None:
    gen = torch.Generator().manual_seed(0)
    assert {sample_transform(AugConfig(), gen) for _ in range(200)} == set(D4)
    assert {sample_transform(AugConfig(flip=False), gen) for _ in range(100)} == set(ROTATIONS)
    free = sample_transform(AugConfig(fixed_angles=False), gen)
    assert isinstance(free, FreeRotation) and -360 <= free.angle <= 360


def test_free_rotation_matches_rot90_and_ignores_the_outside() -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 3, 8, 8)
    mask = torch.randint(0, 6, (2, 8, 8))
    quarter = FreeRotation(90.0)
    assert torch.allclose(quarter.apply(x), D4Element(False, 1).apply(x), atol=1e-5)
    assert torch.equal(quarter.apply_mask(mask), D4Element(False, 1).apply(mask))
    assert torch.equal(FreeRotation(0.0).apply_mask(mask), mask)
    tilted = FreeRotation(45.0)
    rotated = tilted.apply_mask(mask)
    assert rotated[0, 0, 0] == 255 and rotated[0, 4, 4] != 255  # corners come from outside the tile
    valid = tilted.valid_mask(x)
    assert valid.shape == (1, 1, 8, 8) and not valid[0, 0, 0, 0] and valid[0, 0, 4, 4]
    # the MSE only looks inside the tile: a constant map is "equivariant" there
    f = torch.ones(1, 2, 8, 8)
    assert contrastive_terms(f, f, None, tilted)["cd_self"].item() == pytest.approx(0.0, abs=1e-6)


def test_transform_batch_with_colour() -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 4, 8, 8)
    y = torch.randint(0, 3, (2, 8, 8))
    g = D4[6]
    xg, yg = transform_batch(g, x, y, AugConfig())
    assert torch.equal(xg, g.apply(x)) and torch.equal(yg, g.apply(y))
    xc, _ = transform_batch(g, x, y, AugConfig(color=True), torch.Generator().manual_seed(0))
    assert xc.shape == xg.shape and not torch.equal(xc, xg) and xc.min() >= 0 and xc.max() <= 1


def test_full_step_through_a_segmenter(tiny_model_factory) -> None:
    # how the trainer composes the terms: CE on x and g(x), KD, CD; everything trainable gets a gradient
    from cdseg.losses import CEConfig, KDConfig, build_kd_loss, build_seg_loss
    from cdseg.models import init_new_head_mib, load_previous_into

    old = tiny_model_factory(heads=[2]).freeze()
    new = tiny_model_factory(heads=[2, 1], seed=1)
    load_previous_into(new, old.state_dict())
    init_new_head_mib(new)
    aug = AugConfig(factor=0.1, factor_icl=0.1)
    x, y = torch.rand(2, 3, 32, 32), torch.randint(0, 3, (2, 32, 32))
    g = sample_transform(aug, torch.Generator().manual_seed(3))
    xg, yg = transform_batch(g, x, y, aug)
    logits, f_x = new(x)
    logits_g, f_gx = new(xg)
    with torch.no_grad():
        q, f_old = old(x)
    seg = build_seg_loss(CEConfig(unbiased=True), old_classes=2)(torch.cat([logits, logits_g]), torch.cat([y, yg]))
    kd = build_kd_loss(KDConfig(unbiased=True, weight=10))(logits, q)
    cd = ContrastiveDistillation(aug)(f_x, f_gx, f_old, g)
    total = seg + 10 * kd + cd["cd"]
    total.backward()
    assert torch.isfinite(total)
    assert all(p.grad is not None for p in new.parameters())
    assert all(p.grad is None for p in old.parameters())
