"""D4 test-time augmentation: inverse transforms are right, an equivariant model gains nothing."""

from __future__ import annotations

import torch
from torch import nn

from cdseg.evaluate.sliding import predict_scene
from cdseg.evaluate.tta import d4_apply, d4_invert, make_prob_fn, softmax_


def test_d4_elements_are_distinct_and_inverted() -> None:
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    images = {tuple(d4_apply(x, g).flatten().tolist()) for g in range(8)}
    assert len(images) == 8
    for g in range(8):
        assert torch.equal(d4_invert(d4_apply(x, g), g), x)


def test_tta_of_an_equivariant_model_equals_no_tta() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 5, 1))  # pointwise: D4-equivariant
    x = torch.rand(2, 3, 32, 32)
    plain = make_prob_fn(model)(x)
    tta = make_prob_fn(model, tta=True)(x)
    assert torch.allclose(plain, tta, atol=1e-6)
    scene = torch.randint(0, 256, (3, 70, 45), dtype=torch.uint8)
    a, sa = predict_scene(scene, make_prob_fn(model), 5, window=32, overlap=8)
    b, sb = predict_scene(scene, make_prob_fn(model, tta=True), 5, window=32, overlap=8, passes_per_window=8)
    assert torch.equal(a, b)
    assert sb.pixels_pushed == 8 * sa.pixels_pushed


def test_tta_averages_inverse_transformed_probabilities() -> None:
    torch.manual_seed(1)
    model = nn.Conv2d(3, 4, 3, padding=1)  # not equivariant: TTA must equal the explicit mean
    x = torch.rand(3, 3, 16, 16)  # several windows: each is inverted into the sum on its own
    expected = torch.stack([
        torch.softmax(model(torch.rot90(x.flip(-1) if g >= 4 else x, g % 4, (-2, -1))), 1) for g in range(8)])
    expected = torch.stack([
        (torch.rot90(expected[g], -(g % 4), (-2, -1)).flip(-1) if g >= 4 else torch.rot90(expected[g], -(g % 4), (-2, -1)))
        for g in range(8)]).mean(0)
    assert torch.allclose(make_prob_fn(model, tta=True)(x), expected, atol=1e-6)
    assert not torch.allclose(make_prob_fn(model)(x), expected, atol=1e-3)


def test_softmax_in_place_is_torch_softmax() -> None:
    torch.manual_seed(2)
    logits = torch.randn(2, 5, 7, 9) * 30  # large logits: exp overflows without the max subtracted
    expected = torch.softmax(logits, dim=1)
    out = softmax_(logits)
    assert out.data_ptr() == logits.data_ptr()  # no second class-sized tensor
    # float rounding only: a relative 1e-6 (a few units in the last place)
    assert torch.allclose(out, expected, rtol=1e-6, atol=1e-30) and torch.equal(out.argmax(1), expected.argmax(1))


def _segmenter(heads: list[int]) -> nn.Module:
    from cdseg.models import ModelConfig, build_segmenter

    torch.manual_seed(0)
    cfg = ModelConfig(encoder="test_resnet", pretrained=False, norm="bn")
    return build_segmenter(cfg, heads, ["R", "G", "B"], {b: {"mean": 0.3, "std": 0.2} for b in "RGB"}).eval()


def test_evaluation_calls_the_logits_only_path_with_identical_predictions() -> None:
    model = _segmenter([3, 2])
    forwards: list[int] = []
    model.register_forward_hook(lambda m, i, o: forwards.append(1))  # the full forward (features included)
    scene = torch.randint(0, 256, (3, 70, 45), dtype=torch.uint8)
    for tta in (False, True):
        passes = 8 if tta else 1
        lean, _ = predict_scene(scene, make_prob_fn(model, tta=tta), 5, window=32, overlap=8, passes_per_window=passes)
        assert forwards == []  # evaluation never built the full-resolution decoder features
        full, _ = predict_scene(scene, make_prob_fn(model, tta=tta, features=True), 5, window=32, overlap=8,
                                passes_per_window=passes)
        assert forwards and torch.equal(lean, full)
        forwards.clear()
    x = torch.rand(2, 3, 32, 32)
    # the logits-only path runs the decoder in bands of rows: the same probabilities within float rounding
    assert torch.allclose(make_prob_fn(model)(x), make_prob_fn(model, features=True)(x), atol=1e-6)
