"""The window grid and blending: minimal window count, coverage of every pixel, weights normalising to one."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cdseg.evaluate.sliding import (
    axis_starts,
    blend_weights,
    coverage,
    min_windows,
    predict_scene,
    window_grid,
)


@settings(max_examples=200, deadline=None)
@given(length=st.integers(1, 700), window=st.integers(1, 256), data=st.data())
def test_axis_grid_is_minimal_covers_and_respects_overlap(length: int, window: int, data: st.DataObject) -> None:
    overlap = data.draw(st.integers(0, window - 1))
    starts = axis_starts(length, window, overlap)
    # the fewest windows allowed: one fewer could not cover the scene with that overlap
    n = len(starts)
    assert n == min_windows(length, window, overlap)
    if length > window:
        assert (n - 1 - 1) * (window - overlap) + window < length  # n - 1 windows at the largest stride fall short
    assert starts[0] == 0 and starts == sorted(set(starts))
    assert starts[-1] + window == max(length, window)  # the last window clamped to the edge
    for a, b in zip(starts, starts[1:], strict=False):
        assert a + window - b >= overlap  # every overlap at least the asked one


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 200), w=st.integers(1, 200), win=st.sampled_from([8, 16, 32, 48]), data=st.data(),
       kind=st.sampled_from(["hann", "gaussian", "uniform"]))
def test_blend_weights_cover_every_pixel_and_normalise_to_one(h: int, w: int, win: int, data: st.DataObject, kind: str) -> None:
    overlap = data.draw(st.integers(0, win - 1))
    floor = data.draw(st.sampled_from([0.01, 0.05, 0.5, 1.0]))
    total = coverage(h, w, win, overlap, kind, floor)
    assert total.shape == (h, w)
    assert bool((total >= floor**2 - 1e-7).all())  # every pixel covered, never by weight 0
    # the normalised contributions of the windows covering a pixel sum to one
    ph, pw = max(h, win), max(w, win)
    weights = blend_weights(win, win, kind, floor)
    summed = torch.zeros(ph, pw, dtype=torch.float64)
    for y, x in window_grid(ph, pw, win, overlap):
        summed[y : y + win, x : x + win] += weights.double() / torch.nn.functional.pad(total, (0, pw - w, 0, ph - h), value=1.0).double()[y : y + win, x : x + win]
    assert torch.allclose(summed[:h, :w], torch.ones(h, w, dtype=torch.float64), atol=1e-5)


def test_weights_favour_the_centre_and_are_symmetric() -> None:
    w = blend_weights(64, 64, "hann", 0.05)
    assert w.max() == w[31:33, 31:33].max() and math.isclose(float(w.max()), 1.0, abs_tol=1e-3)
    assert float(w.min()) >= 0.05**2 and float(w.min()) < 0.06**2  # the floor holds at the corners
    assert torch.equal(w, w.flip(0)) and torch.equal(w, w.t())
    assert float(w[0, 0]) < float(w[32, 32])


def _identity_probs(k: int):  # type: ignore[no-untyped-def]
    """A 'model' whose probabilities are one-hot of the first channel's value (so the stitch must be exact)."""
    def fn(x: torch.Tensor) -> torch.Tensor:
        idx = (x[:, 0] * 255).round().long().clamp(0, k - 1)
        return torch.nn.functional.one_hot(idx, k).permute(0, 3, 1, 2).float()
    return fn


def test_stitching_reproduces_a_pixelwise_model_and_counts_work() -> None:
    g = torch.Generator().manual_seed(0)
    scene = torch.randint(0, 5, (3, 96, 80), generator=g, dtype=torch.uint8)
    pred, stats = predict_scene(scene, _identity_probs(5), 5, window=32, overlap=8, batch_size=3)
    assert torch.equal(pred, scene[0].long())
    n = len(window_grid(96, 80, 32, 8))
    assert stats.windows == n == min_windows(96, 32, 8) * min_windows(80, 32, 8)
    assert stats.pixels_pushed == n * 32 * 32 and stats.scene_pixels == 96 * 80


def test_scene_smaller_than_the_window_is_padded_and_cropped_back() -> None:
    scene = torch.randint(0, 4, (3, 20, 50), dtype=torch.uint8)
    pred, stats = predict_scene(scene, _identity_probs(4), 4, window=32, overlap=8, batch_size=2)
    assert pred.shape == (20, 50) and torch.equal(pred, scene[0].long())
    assert stats.windows == 2


def test_padded_uint8_scene_is_scaled_like_an_unpadded_one() -> None:
    seen: list[float] = []

    def fn(x: torch.Tensor) -> torch.Tensor:
        seen.append(float(x.max()))
        return torch.ones(x.shape[0], 2, *x.shape[-2:])

    scene = torch.full((3, 20, 20), 255, dtype=torch.uint8)
    predict_scene(scene, fn, 2, window=32, overlap=8)
    predict_scene(torch.full((3, 40, 40), 255, dtype=torch.uint8), fn, 2, window=32, overlap=8)
    assert seen and all(v == 1.0 for v in seen)
