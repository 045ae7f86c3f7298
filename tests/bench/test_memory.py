"""The CPU peak-memory counter sees tensors appear and disappear (not a timed test)."""

from __future__ import annotations

import torch

from cdseg.bench.memory import LiveTensorBytes, peak_bytes

MB4 = 1000 * 1000 * 4  # a 1000 x 1000 float32 tensor


def test_live_tensor_bytes_tracks_frees_views_and_in_place() -> None:
    a = torch.ones(1000, 1000)  # made before: not counted
    with LiveTensorBytes() as live:
        b = a * 2
        v = b.view(-1)  # same storage: not counted again
        b.add_(1)  # in place: not counted again
        assert live.current == MB4
        del b, v
        c = a + 1
        d = c * 3
        assert live.current == 2 * MB4
        del c, d
    assert live.current == 0 and live.peak == 2 * MB4


def test_peak_bytes_of_a_chain_that_frees_as_it_goes() -> None:
    x = torch.ones(1000, 1000)

    def chain() -> torch.Tensor:
        y = x
        for _ in range(5):
            y = y * 2  # the previous step dies as the next appears: two alive at once
        return y

    assert peak_bytes(chain, torch.device("cpu")) == 2 * MB4
    assert peak_bytes(lambda: torch.stack([x * i for i in range(3)]), torch.device("cpu")) == 6 * MB4


def test_a_view_of_a_tensor_made_before_the_call_is_not_counted() -> None:
    a = torch.ones(1000, 1000)  # the input batch, made before
    with LiveTensorBytes() as live:
        rows = a[100:200]  # a view: its storage is a's, nothing allocated
        doubled = rows * 2
        assert live.current == MB4 // 10
        del rows, doubled
    assert live.peak == MB4 // 10
