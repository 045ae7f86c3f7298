"""The banded inference path (`IncrementalSegmenter.predict`, `UNetDecoder.forward_rows`) against the plain forward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cdseg.bench.memory import LiveTensorBytes
from cdseg.models.decoder import upsample_rows


@pytest.mark.parametrize(("size", "out"), [((16, 20), (32, 40)), ((33, 17), (64, 34)), ((5, 5), (5, 9)), ((1, 4), (3, 8))])
def test_upsample_rows_equals_the_full_upsampling_band_by_band(size: tuple[int, int], out: tuple[int, int]) -> None:
    x = torch.randn(2, 3, *size)
    full = F.interpolate(x, size=out, mode="bilinear", align_corners=True)
    for start, stop in [(0, out[0]), (0, 1), (out[0] - 1, out[0]), (out[0] // 3, out[0] // 3 + 2)]:
        assert torch.allclose(upsample_rows(x, out, start, stop), full[:, :, start:stop], atol=1e-6)


@pytest.mark.parametrize("rows", [1, 3, 5, 1000])
@pytest.mark.parametrize("shape", [(2, 3, 64, 96), (1, 3, 70, 38)])
def test_banded_predict_equals_the_plain_forward(tiny_model, rows: int, shape: tuple[int, ...]) -> None:  # noqa: ANN001
    model = tiny_model(heads=[3, 2]).eval()
    x = torch.rand(*shape)
    with torch.inference_mode():
        plain = model(x)[0]
        banded = model.predict(x, rows=rows)
    assert banded.shape == plain.shape
    assert (banded - plain).abs().max() < 1e-6  # float rounding of the upsampling, nothing else
    assert torch.equal(banded.argmax(1), plain.argmax(1))


def test_banded_predict_with_channels_last_and_in_training_mode(tiny_model) -> None:  # noqa: ANN001
    model = tiny_model(heads=[2], channels_last=True).eval()
    x = torch.rand(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert torch.allclose(model.predict(x, rows=4), model(x)[0], atol=1e-6)
    model.train()  # batch statistics are not row-local: the plain forward runs
    torch.manual_seed(0)
    a = model.predict(x)
    torch.manual_seed(0)
    assert torch.equal(a, model(x)[0])


def test_banded_predict_holds_less_memory_than_the_plain_one(tiny_model) -> None:  # noqa: ANN001
    model = tiny_model(heads=[3, 2]).eval()
    x = torch.rand(2, 3, 128, 128)
    peaks = {}
    for rows in (None, 8):
        with torch.no_grad(), LiveTensorBytes() as live:
            model.predict(x, rows=rows)
        peaks[rows] = live.peak
    assert peaks[8] < 0.7 * peaks[None], peaks
