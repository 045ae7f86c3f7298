from __future__ import annotations

import itertools

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cdseg.models.d4 import D4, IDENTITY, ROTATIONS, D4Element, random_element

elements = st.sampled_from(D4)


def _tensors() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [
        torch.rand(2, 3, 5, 5, generator=g),  # image
        torch.randint(0, 6, (2, 5, 5), generator=g, dtype=torch.int64).to(torch.uint8),  # mask
        torch.randn(1, 7, 4, 6, generator=g),  # non-square feature map
    ]


def test_eight_distinct_elements() -> None:
    x = torch.arange(16.0).reshape(4, 4)
    images = {tuple(g.apply(x).flatten().tolist()) for g in D4}
    assert len(D4) == 8 and len(images) == 8
    assert IDENTITY in D4 and len(ROTATIONS) == 4


def test_composition_table_matches_application() -> None:
    for t in _tensors():
        for g, h in itertools.product(D4, D4):
            assert torch.equal(g.compose(h).apply(t), g.apply(h.apply(t))), (g, h)


def test_group_axioms() -> None:
    for g in D4:
        assert g.compose(g.inverse) == IDENTITY == g.inverse.compose(g)
        assert g.compose(IDENTITY) == g == IDENTITY.compose(g)
    for g, h in itertools.product(D4, D4):
        assert g.compose(h) in D4  # closure
    for a, b, c in itertools.product(D4, D4, D4):
        assert a.compose(b.compose(c)) == a.compose(b).compose(c)
    # D4 is not abelian: flip then rotate != rotate then flip
    assert D4Element(True, 0).compose(D4Element(False, 1)) != D4Element(False, 1).compose(D4Element(True, 0))


@settings(max_examples=40, deadline=None)
@given(g=elements, h=(st.integers(1, 6)), w=st.integers(1, 6), c=st.integers(1, 3))
def test_inverse_undoes_on_any_shape(g: D4Element, h: int, w: int, c: int) -> None:
    t = torch.randn(2, c, h, w)
    out = g.apply(t)
    assert out.shape[-2:] == ((w, h) if g.k % 2 else (h, w))
    assert torch.equal(g.inverse.apply(out), t)
    mask = torch.randint(0, 255, (2, h, w))
    assert torch.equal(g.inverse.apply_mask(g.apply_mask(mask)), mask)


def test_images_masks_and_features_move_together() -> None:
    # a pointwise function of the image commutes with every element: g(f(x)) == f(g(x))
    x = torch.rand(1, 3, 6, 6)
    label = (x[:, 0] > 0.5).long()
    for g in D4:
        assert torch.equal(g.apply_mask(label), (g.apply(x)[:, 0] > 0.5).long())


def test_rot90_direction_and_random_element() -> None:
    x = torch.tensor([[1, 2], [3, 4]])
    assert D4Element(False, 1).apply(x).tolist() == torch.rot90(x, 1, (0, 1)).tolist()
    gen = torch.Generator().manual_seed(1)
    drawn = {random_element(True, gen) for _ in range(200)}
    assert drawn == set(D4)
    assert {random_element(False, gen) for _ in range(100)} == set(ROTATIONS)
