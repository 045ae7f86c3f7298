"""Whole-scene inference with the row-band sum equals the straightforward whole-scene sum, label for label."""

from __future__ import annotations

import pytest
import torch

from cdseg.evaluate.sliding import _pad_to, band_rows, blend_weights, iter_batches, predict_scene, window_grid


def _whole_scene(image: torch.Tensor, prob_fn, classes: int, window: int, overlap: int, batch: int) -> torch.Tensor:  # noqa: ANN001
    """predict_scene before issue 18: one float32 sum over the whole (padded) scene, argmax at the end."""
    height, width = image.shape[-2:]
    padded = _pad_to(image, window, window)
    ph, pw = padded.shape[-2:]
    win = min(window, ph), min(window, pw)
    weights = blend_weights(*win)
    acc = torch.zeros((classes, ph, pw))
    for chunk in iter_batches(window_grid(ph, pw, window, overlap), batch):
        crops = torch.stack([padded[:, y : y + win[0], x : x + win[1]] for y, x in chunk]).float().div_(255.0)
        for (y, x), p in zip(chunk, prob_fn(crops).float(), strict=True):
            acc[:, y : y + win[0], x : x + win[1]].addcmul_(p, weights)
    return acc[:, :height, :width].argmax(0)


def _probs(crops: torch.Tensor) -> torch.Tensor:
    """A fixed, position-dependent 'model' with near-ties, so that a different sum would show."""
    g = torch.Generator().manual_seed(crops.shape[-1] * 31 + crops.shape[-2])
    w = torch.randn(5, crops.shape[1], generator=g)
    logits = torch.einsum("kc,bchw->bkhw", w, crops) + torch.linspace(0, 1e-3, crops.shape[-1])
    return torch.softmax(logits, dim=1)


@pytest.mark.parametrize(("h", "w", "window", "overlap", "batch"), [
    (70, 45, 32, 8, 4), (100, 33, 32, 8, 8), (100, 33, 32, 16, 3), (20, 90, 32, 8, 2), (64, 64, 64, 0, 1),
    (129, 97, 48, 24, 5)])
def test_row_band_labels_equal_the_whole_scene_sum(h: int, w: int, window: int, overlap: int, batch: int) -> None:
    scene = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(h * w))
    labels, stats = predict_scene(scene, _probs, 5, window=window, overlap=overlap, batch_size=batch)
    assert labels.dtype == torch.int64 and labels.shape == (h, w)
    assert torch.equal(labels, _whole_scene(scene, _probs, 5, window, overlap, batch))
    assert stats.windows == len(window_grid(max(h, window), max(w, window), window, overlap))


def test_the_band_is_smaller_than_the_scene_when_the_scene_is_taller_than_two_windows() -> None:
    grid = window_grid(6000, 6000, 512, 128)
    rows = band_rows(list(iter_batches(grid, 8)), 512)
    assert rows <= 2 * 512 < 6000  # a batch spans at most two rows of windows here
