"""The banded encoder stem (`cdseg.models.stem`) in `IncrementalSegmenter.predict`, against the plain forward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cdseg.bench.memory import LiveTensorBytes
from cdseg.models import IncrementalSegmenter
from cdseg.models.stem import banded_stem

SHAPES = [(2, 3, 64, 96), (1, 3, 37, 29), (1, 3, 70, 38), (1, 3, 33, 17)]  # odd sizes, not multiples of 2, 4 or 32


def _check(model: IncrementalSegmenter, x: torch.Tensor, rows: int) -> None:
    with torch.inference_mode():
        plain = model(x)[0]
        banded = model.predict(x, rows=rows)
    assert banded.shape == plain.shape
    assert (banded - plain).abs().max() < 1e-6  # float rounding of banded convolutions and upsampling
    assert torch.equal(banded.argmax(1), plain.argmax(1))


def _old_predict(model: IncrementalSegmenter, x: torch.Tensor, rows: int) -> torch.Tensor:
    """`predict` before the banded stem: the encoder whole, the decoder banded."""
    stages = list(model.encoder(model.normalise(x)))
    small = model.decoder.forward_rows(stages, model._heads, rows)
    return F.interpolate(small, size=x.shape[-2:], mode="bilinear", align_corners=True)


@pytest.mark.parametrize("rows", [1, 2, 5, 1000])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("encoder", ["test_resnet", "resnet18"])  # a 3-conv deep stem; a 7x7 conv and max-pool
def test_banded_stem_predict_equals_the_plain_forward(tiny_model, encoder: str, rows: int,  # noqa: ANN001
                                                      shape: tuple[int, ...]) -> None:
    model = tiny_model(heads=[3, 2], encoder=encoder).eval()
    assert banded_stem(model.encoder, model.normalise) is not None
    _check(model, torch.rand(*shape), rows)


@pytest.mark.parametrize("encoder", ["test_resnet", "resnet18"])
def test_banded_stem_with_channels_last(tiny_model, encoder: str) -> None:  # noqa: ANN001
    model = tiny_model(heads=[2], encoder=encoder, channels_last=True).eval()
    _check(model, torch.rand(2, 3, 45, 64).contiguous(memory_format=torch.channels_last), 4)


@pytest.mark.parametrize("rows", [1, 3, 64])
def test_banded_stem_with_dilated_grouped_strided_convs_and_ceil_mode_pool(tiny_model,  # noqa: ANN001
                                                                             rows: int) -> None:
    model = tiny_model(heads=[3]).eval()
    stem = model.encoder.conv1  # test_resnet: conv 3x3 s2, bn, relu, conv 3x3, bn, relu, conv 3x3
    stem[0] = nn.Conv2d(3, 16, (5, 3), stride=(3, 2), padding=(2, 1), dilation=(2, 1), bias=True)
    stem[3] = nn.Conv2d(16, 16, 3, padding=2, dilation=2, groups=4, bias=False)
    model.encoder.maxpool = nn.MaxPool2d((3, 2), stride=(2, 2), padding=(1, 1), ceil_mode=True)
    model.eval()
    plan = banded_stem(model.encoder, model.normalise)
    assert plan is not None and len(plan.ops) == 10  # 7 conv1 layers, bn1, act1, maxpool
    for shape in [(1, 3, 61, 40), (2, 3, 50, 33)]:
        _check(model, torch.rand(*shape), rows)


def test_stem_rows_equal_the_whole_stem_for_any_row_range(tiny_model) -> None:  # noqa: ANN001
    model = tiny_model(heads=[2], encoder="resnet18").eval()
    plan = banded_stem(model.encoder, model.normalise)
    assert plan is not None
    x = torch.rand(1, 3, 53, 31)
    enc = model.encoder
    with torch.inference_mode():
        whole = enc.maxpool(enc.act1(enc.bn1(enc.conv1(model.normalise(x)))))
        for start, stop in [(0, 1), (0, whole.shape[-2]), (whole.shape[-2] - 1, whole.shape[-2]), (3, 9)]:
            assert torch.allclose(plan.rows(x, len(plan.ops), start, stop), whole[:, :, start:stop], atol=1e-6)


class _OwnBatchNorm(nn.BatchNorm2d):
    """A subclass: not on the allow-list (it could change the maths), so the stem falls back."""


def test_a_module_off_the_allow_list_falls_back_to_the_whole_encoder(tiny_model) -> None:  # noqa: ANN001
    model = tiny_model(heads=[3, 2]).eval()
    own = _OwnBatchNorm(model.encoder.bn1.num_features)
    own.load_state_dict(model.encoder.bn1.state_dict())
    model.encoder.bn1 = own
    model.eval()
    assert banded_stem(model.encoder, model.normalise) is None
    x = torch.rand(2, 3, 45, 38)
    with torch.inference_mode():
        assert torch.equal(model.predict(x, rows=5), _old_predict(model, x, 5))


def test_training_mode_layers_and_other_encoders_fall_back(tiny_model) -> None:  # noqa: ANN001
    model = tiny_model(heads=[2]).eval()
    model.encoder.bn1.train()  # batch statistics are not row-local
    assert banded_stem(model.encoder, model.normalise) is None
    effnet = tiny_model(heads=[2], encoder="test_efficientnet").eval()  # not a FeatureListNet
    assert banded_stem(effnet.encoder, effnet.normalise) is None
    x = torch.rand(1, 3, 40, 40)
    with torch.inference_mode():
        assert torch.equal(effnet.predict(x, rows=4), _old_predict(effnet, x, 4))


def test_predict_never_holds_the_whole_stride_2_level(tiny_model) -> None:  # noqa: ANN001
    model = tiny_model(heads=[8], encoder="resnet18").eval()
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        stage0 = model.encoder(model.normalise(x))[0]  # 64 channels at stride 2: 2x these 8-class logits
        with LiveTensorBytes() as live:
            logits = model.predict(x, rows=16)
    level = stage0.numel() * stage0.element_size()
    assert level == 2 * logits.numel() * logits.element_size()
    # the unbanded stem alone holds 2 levels (its convolution's and its batch norm's outputs; measured: 2.19
    # levels, 4.4x the logits); banded: 1.03 levels, 2.1x the logits
    assert live.peak < 1.5 * level, (live.peak, level)
