"""Whole-scene inference: the window grid, centre-favouring blending weights, and the stitched prediction."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

#: A function from a batch of windows (B x C x h x w, float in [0, 1]) to class probabilities (B x K x h x w).
ProbFn = Callable[[torch.Tensor], torch.Tensor]


def axis_starts(length: int, window: int, overlap: int) -> list[int]:
    """Start offsets of the fewest windows of `window` px that cover `length` px with >= `overlap` px overlap.

    The first window starts at 0 and the last ends at `length` (clamped to the edge); the ones between are
    spread evenly, so every overlap is at least `overlap` and the overlaps differ by at most one pixel.
    """
    if window <= 0 or not 0 <= overlap < window:
        raise ValueError(f"need window > 0 and 0 <= overlap < window, got window={window}, overlap={overlap}")
    if length <= window:
        return [0]
    stride = window - overlap
    n = math.ceil((length - window) / stride) + 1
    span = length - window
    # integer rounding of i * span / (n - 1): consecutive gaps are <= ceil(span / (n - 1)) <= stride
    return [(i * span + (n - 1) // 2) // (n - 1) for i in range(n)]


def window_grid(height: int, width: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """(top, left) of every window covering a `height` x `width` scene (row-major)."""
    return [(y, x) for y in axis_starts(height, window, overlap) for x in axis_starts(width, window, overlap)]


def min_windows(length: int, window: int, overlap: int) -> int:
    """The fewest windows that cover `length` with the given overlap (the count `axis_starts` must reach)."""
    return 1 if length <= window else math.ceil((length - window) / (window - overlap)) + 1


def blend_weights_1d(size: int, kind: str = "hann", floor: float = 0.05) -> torch.Tensor:
    """Per-pixel weights along one window side: highest at the centre, never below `floor` (relative)."""
    pos = (torch.arange(size, dtype=torch.float64) + 0.5) / size  # pixel centres in (0, 1), symmetric
    if kind == "hann":
        w = 0.5 - 0.5 * torch.cos(2 * math.pi * pos)
    elif kind == "gaussian":
        sigma = 0.125  # of the window side, as nnU-Net
        w = torch.exp(-0.5 * ((pos - 0.5) / sigma) ** 2)
    elif kind == "uniform":
        w = torch.ones(size, dtype=torch.float64)
    else:
        raise ValueError(f"unknown blending {kind!r}; use hann, gaussian or uniform")
    w = w / w.max()
    return (floor + (1.0 - floor) * w).to(torch.float32)


def blend_weights(height: int, width: int, kind: str = "hann", floor: float = 0.05) -> torch.Tensor:
    """Separable 2-D window weights (`height` x `width`), outer product of the 1-D ones."""
    return blend_weights_1d(height, kind, floor)[:, None] * blend_weights_1d(width, kind, floor)[None, :]


@dataclass
class InferenceStats:
    """Work done: pixels pushed through the network (TTA included) against the scene pixels."""

    windows: int = 0
    forward_passes: int = 0
    pixels_pushed: int = 0
    scene_pixels: int = 0
    seconds: float = 0.0
    per_scene: dict[str, int] = field(default_factory=dict)

    def add(self, other: InferenceStats) -> None:
        """Accumulate another scene's counters."""
        self.windows += other.windows
        self.forward_passes += other.forward_passes
        self.pixels_pushed += other.pixels_pushed
        self.scene_pixels += other.scene_pixels
        self.seconds += other.seconds


def _pad_to(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Reflect-pad C x H x W on the bottom/right to at least height x width (replicate where reflect cannot)."""
    ph, pw = max(0, height - image.shape[-2]), max(0, width - image.shape[-1])
    if ph == 0 and pw == 0:
        return image
    mode = "reflect" if ph < image.shape[-2] and pw < image.shape[-1] else "replicate"
    # padding kernels are not implemented for uint8 on every device: pad a float copy (values unchanged)
    return F.pad(image[None].float(), (0, pw, 0, ph), mode=mode)[0]


def iter_batches(grid: list[tuple[int, int]], batch_size: int) -> Iterator[list[tuple[int, int]]]:
    """Consecutive chunks of the window grid."""
    for i in range(0, len(grid), batch_size):
        yield grid[i : i + batch_size]


@torch.no_grad()
def predict_scene(
    image: torch.Tensor,
    prob_fn: ProbFn,
    num_classes: int,
    *,
    window: int,
    overlap: int,
    batch_size: int = 4,
    blend: str = "hann",
    floor: float = 0.05,
    passes_per_window: int = 1,
) -> tuple[torch.Tensor, InferenceStats]:
    """Stitch a whole-scene prediction (H x W int64 class indices) from blended sliding windows.

    `image` is C x H x W (uint8 0..255 or float in [0, 1]) on the device to use. A scene smaller than
    the window along an axis is reflect-padded to the window and the prediction cropped back.
    `passes_per_window` is how many images `prob_fn` pushes per window (8 with TTA), for the counters.
    """
    height, width = image.shape[-2:]
    scale = 1.0 if image.is_floating_point() else 255.0  # uint8 input -> [0, 1]
    padded = _pad_to(image, window, window)
    ph, pw = padded.shape[-2:]
    grid = window_grid(ph, pw, window, overlap)
    win = min(window, ph), min(window, pw)
    weights = blend_weights(*win, kind=blend, floor=floor).to(image.device)
    batches = list(iter_batches(grid, batch_size))
    acc = RowBand(num_classes, band_rows(batches, win[0]), pw, height, width, image.device)
    stats = InferenceStats(scene_pixels=height * width)
    for chunk in batches:
        acc.finish_above(chunk[0][0])  # windows come row by row: no later window reaches above this one
        crops = torch.stack([padded[:, y : y + win[0], x : x + win[1]] for y, x in chunk])
        crops = crops.float().div_(scale) if scale != 1.0 else crops.float()
        probs = prob_fn(crops).float()
        if probs.shape[0] != len(chunk) or probs.shape[-2:] != crops.shape[-2:] or probs.shape[1] != num_classes:
            raise RuntimeError(f"the model returned {tuple(probs.shape)} for windows {tuple(crops.shape)}; "
                               f"expected {num_classes} class maps of the window size")
        for (y, x), p in zip(chunk, probs, strict=True):
            acc.add(p, weights, y, x)
        stats.windows += len(chunk)
        stats.forward_passes += passes_per_window
        stats.pixels_pushed += passes_per_window * len(chunk) * win[0] * win[1]
    acc.finish_above(ph)
    return acc.labels, stats


def band_rows(batches: list[list[tuple[int, int]]], window: int) -> int:
    """Scene rows the blended sum must hold at once: from a batch's first window (no row above it gets another
    window) to the bottom of its lowest window, the most over all batches of a row-major grid."""
    return max(max(y for y, _ in chunk) + window - chunk[0][0] for chunk in batches)


class RowBand:
    """The blended probability sum of a band of scene rows (a ring buffer), turned into class indices row by row.

    The whole-scene sum (classes x height x width float32, 864 MB for a 6000 x 6000 scene with 6 classes) is
    never built: a row is final once no later window reaches it, and its argmax goes to `labels` then. The
    values summed, and their order, are those of a whole-scene sum, so the labels are the same."""

    def __init__(self, classes: int, rows: int, width: int, out_h: int, out_w: int, device: torch.device) -> None:
        self.sum = torch.zeros((classes, rows, width), dtype=torch.float32, device=device)
        self.labels = torch.empty((out_h, out_w), dtype=torch.int64, device=device)
        self.rows, self.top = rows, 0  # scene row `top` is the first not yet finished

    def _segments(self, start: int, stop: int) -> list[tuple[int, int, int]]:
        """(ring row, scene row, count) pieces of scene rows [start, stop) (at most two: the ring wraps once)."""
        out, row = [], start
        while row < stop:
            ring = row % self.rows
            n = min(stop - row, self.rows - ring)
            out.append((ring, row, n))
            row += n
        return out

    def add(self, probs: torch.Tensor, weights: torch.Tensor, y: int, x: int) -> None:
        """Add one window's weighted probabilities (classes x h x w) at scene position (y, x)."""
        h, w = probs.shape[-2:]
        assert self.top <= y and y + h <= self.top + self.rows, (y, h, self.top, self.rows)
        for ring, row, n in self._segments(y, y + h):
            self.sum[:, ring : ring + n, x : x + w].addcmul_(probs[:, row - y : row - y + n], weights[row - y : row - y + n])

    def finish_above(self, row: int) -> None:
        """Scene rows above `row` are final: their class indices go to `labels`, their ring rows are reset."""
        for ring, scene_row, n in self._segments(self.top, row):
            keep = min(n, self.labels.shape[0] - scene_row)  # padded rows below the scene are dropped
            if keep > 0:
                part = self.sum[:, ring : ring + keep, : self.labels.shape[1]]
                # every pixel has a positive total weight (weights >= floor > 0), so argmax of the weighted sum
                # equals argmax of the normalised blend; no division needed
                self.labels[scene_row : scene_row + keep] = part.argmax(0)
            self.sum[:, ring : ring + n].zero_()
        self.top = max(self.top, row)


def coverage(height: int, width: int, window: int, overlap: int, blend: str = "hann", floor: float = 0.05) -> torch.Tensor:
    """Total blending weight per scene pixel (H x W): > 0 everywhere means every pixel is predicted."""
    ph, pw = max(height, window), max(width, window)
    win = min(window, ph), min(window, pw)
    w = blend_weights(*win, kind=blend, floor=floor)
    total = torch.zeros((ph, pw), dtype=torch.float32)
    for y, x in window_grid(ph, pw, window, overlap):
        total[y : y + win[0], x : x + win[1]] += w
    return total[:height, :width]
