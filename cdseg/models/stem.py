"""The encoder's stem in bands of rows, for eval-mode prediction (`IncrementalSegmenter.predict`).

A timm `features_only` encoder built as an ordered module container (`FeatureListNet`: resnet's conv1, bn1,
act1, maxpool, layer1, ...) usually opens with layers whose output rows depend on a known, small window of
input rows: convolutions, norms with running statistics, pointwise activations, max-pooling. `banded_stem`
finds that leading run (an allow-list of exact module types; `nn.Sequential`s of them are looked into) and
`BandedStem.features` computes it a band of rows at a time, from the raw input rows each band needs
(normalised per band), so that none of its full-resolution activations exists whole:

- the run's last output (resnet: the max-pool's, at stride 4) is assembled band by band and fed to the rest
  of the encoder, which runs whole as in `FeatureListNet.forward`;
- the first feature level, when it is inside the run (resnet: act1, 64 channels at stride 2, as large as
  the stem's convolution output), is not kept at all: it becomes a `StemRows` that recomputes the rows the
  decoder's last block asks for (`cdseg.models.decoder.RowSource`).

A band's rows are computed with the module's own parameters and height padding 0; the padding rows the full
op would add (zeros for a convolution, -inf for max-pooling) are added explicitly, only at the real top and
bottom edges, so every row equals the full op's within float rounding. Anything outside the allow-list
(space-to-depth, weight-standardised or 'same'-padded convolutions, an encoder or layer in training mode,
other containers) ends the run; without a run that reaches past the first feature level, `banded_stem`
returns None and the caller runs the encoder whole.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cdseg.models.norm import is_fused

#: pointwise modules (in eval mode: norms use their running statistics)
POINTWISE: tuple[type[nn.Module], ...] = (
    nn.BatchNorm2d, nn.SyncBatchNorm, nn.Identity, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.SiLU, nn.GELU, nn.ELU,
    nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.PReLU,
)


@dataclass(frozen=True)
class _Op:
    """One row-local layer: its module and, for a window op, the height kernel / stride / padding / dilation."""

    module: nn.Module
    kernel: int = 1
    stride: int = 1
    pad: int = 0
    dilation: int = 1
    ceil_mode: bool = False
    width_pad: int = 0  # a convolution's own width padding (kept)

    def out_height(self, height: int) -> int:
        """Output rows for `height` input rows (torch's convolution / pooling shape rule)."""
        span = height + 2 * self.pad - self.dilation * (self.kernel - 1) - 1
        if not self.ceil_mode:
            return span // self.stride + 1
        out = -(-span // self.stride) + 1
        if (out - 1) * self.stride >= height + self.pad:  # the last window must start inside the input
            out -= 1
        return out

    def in_rows(self, start: int, stop: int) -> tuple[int, int]:
        """Input rows [lo, hi) (padding rows outside [0, height) included) that output rows [start, stop) read."""
        last = (stop - 1) * self.stride - self.pad + self.dilation * (self.kernel - 1)
        return start * self.stride - self.pad, last + 1

    def run(self, x: torch.Tensor, top: int, bottom: int) -> torch.Tensor:
        """The op on rows `x`, adding `top` / `bottom` padding rows first; no height padding of its own."""
        m = self.module
        if isinstance(m, nn.Conv2d):
            x = F.pad(x, (0, 0, top, bottom)) if top or bottom else x
            return F.conv2d(x, m.weight, m.bias, m.stride, (0, self.width_pad), m.dilation, m.groups)
        if isinstance(m, nn.MaxPool2d):
            x = F.pad(x, (0, 0, top, bottom), value=float("-inf")) if top or bottom else x
            kw, sw, pw, dw = (_pair(v)[1] for v in (m.kernel_size, m.stride or m.kernel_size, m.padding, m.dilation))
            return F.max_pool2d(x, (self.kernel, kw), (self.stride, sw), (0, pw), (self.dilation, dw), m.ceil_mode)
        assert top == bottom == 0, "pointwise ops read no padding rows"
        return m(x)


def _pair(v: Any) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _as_op(m: nn.Module) -> _Op | None:
    """The row-local op of `m`, or None when `m` is not on the allow-list (or not in eval mode)."""
    if m.training:
        return None
    if type(m) is nn.Conv2d:  # exact type: subclasses (timm's Conv2dSame, StdConv2d) change the maths
        if m.padding_mode != "zeros" or isinstance(m.padding, str):  # 'same' / 'valid': not worth the cases
            return None
        return _Op(m, m.kernel_size[0], m.stride[0], int(m.padding[0]), m.dilation[0], width_pad=int(m.padding[1]))
    if type(m) is nn.MaxPool2d:
        if m.return_indices:
            return None
        k, s, p, d = (_pair(v)[0] for v in (m.kernel_size, m.stride or m.kernel_size, m.padding, m.dilation))
        return _Op(m, k, s, p, d, bool(m.ceil_mode))
    if type(m) in POINTWISE or is_fused(m):  # is_fused: inplace-abn's ABN family and cdseg's ABN
        return _Op(m)
    return None


def _leaves(m: nn.Module) -> list[nn.Module]:
    """`m` with exact `nn.Sequential`s flattened (their order is their forward)."""
    if type(m) is nn.Sequential:
        return [leaf for child in m for leaf in _leaves(child)]
    return [m]


class StemRows:
    """Rows of the stem's first feature level, recomputed from the input on demand (a `RowSource`)."""

    def __init__(self, stem: BandedStem, x: torch.Tensor, level: int, shape: torch.Size) -> None:
        self.stem, self.x, self.level, self.shape = stem, x, level, shape

    def rows(self, start: int, stop: int) -> torch.Tensor:
        """Rows [start, stop) of the feature."""
        return self.stem.rows(self.x, self.level, start, stop)


class BandedStem:
    """A `FeatureListNet` encoder whose leading row-local run is computed in bands (see the module doc)."""

    def __init__(self, encoder: Any, ops: list[_Op], rest: list[tuple[nn.Module, str | None]], tap: int,
                 normalise: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.encoder, self.ops, self.rest, self.tap, self.normalise = encoder, ops, rest, tap, normalise

    def heights(self, height: int) -> list[int]:
        """Rows of the input and of every op's output, for an input of `height` rows."""
        out = [height]
        for op in self.ops:
            out.append(op.out_height(out[-1]))
        return out

    def rows(self, x: torch.Tensor, level: int, start: int, stop: int) -> torch.Tensor:
        """Rows [start, stop) of op `level - 1`'s output (level 0 is the input) from the raw input `x`."""
        heights = self.heights(x.shape[-2])
        spans = [(start, stop)]  # rows each level must deliver, deepest first
        for i in range(level, 0, -1):
            lo, hi = self.ops[i - 1].in_rows(*spans[-1])
            spans.append((max(lo, 0), min(hi, heights[i - 1])))
        first, last = spans[-1]
        y = self.normalise(x[:, :, first:last])
        for i in range(1, level + 1):
            lo, hi = self.ops[i - 1].in_rows(*spans[level - i])
            have = spans[level - i + 1]
            y = self.ops[i - 1].run(y, have[0] - lo, hi - have[1])
        return y

    def features(self, x: torch.Tensor, rows: int) -> list[torch.Tensor | StemRows]:
        """The encoder's features of raw input `x` (before `normalise`), the first one as a `StemRows`;
        the run is computed `rows` rows of its largest output at a time."""
        heights = self.heights(x.shape[-2])
        end = len(self.ops) if self.rest else 0  # nothing after the run: its output is not needed whole
        step = max(1, rows * heights[end] // max(heights[1:]))
        out: torch.Tensor | None = None
        for start in range(0, heights[end] if end else 0, step):
            band = self.rows(x, end, start, min(heights[end], start + step))
            if out is None:
                nhwc = band.shape[1] > 1 and band.is_contiguous(memory_format=torch.channels_last)
                fmt = torch.channels_last if nhwc else torch.contiguous_format
                out = torch.empty((*band.shape[:2], heights[end], band.shape[-1]), dtype=band.dtype, device=band.device,
                                  memory_format=fmt)
            out[:, :, start : start + band.shape[-2]] = band
            del band
        first = self.rows(x, self.tap + 1, 0, 1)
        feats: list[torch.Tensor | StemRows] = [StemRows(self, x, self.tap + 1, torch.Size(
            (*first.shape[:2], heights[self.tap + 1], first.shape[-1])))]
        del first
        y: Any = out
        del out
        for module, name in self.rest:
            y = module(y)
            if name is not None:
                feats.append(_tapped(y, bool(getattr(self.encoder, "concat", False))))
        return feats


def _tapped(y: Any, concat: bool) -> torch.Tensor:
    """What `FeatureListNet` returns for a layer's output (a tuple's concatenation or first element)."""
    if isinstance(y, (tuple, list)):
        return torch.cat(list(y), 1) if concat else y[0]
    return y


def banded_stem(encoder: nn.Module, normalise: Callable[[torch.Tensor], torch.Tensor]) -> BandedStem | None:
    """The banded form of `encoder` (see the module doc), or None when it has no leading run of allow-listed
    layers that contains its first feature level and ends after it (the encoder then runs whole)."""
    from timm.models import FeatureListNet

    if type(encoder) is not FeatureListNet or encoder.training or getattr(encoder, "grad_checkpointing", False):
        return None
    taps: set[str] = set(encoder.return_layers)
    ops: list[_Op] = []
    rest: list[tuple[nn.Module, str | None]] = []
    first_tap: int | None = None
    in_run = True
    for name, module in encoder.items():
        leaves = _leaves(module)
        for j, leaf in enumerate(leaves):
            tag = name if name in taps and j == len(leaves) - 1 else None
            op = _as_op(leaf) if in_run else None
            if op is None:
                in_run = False
                rest.append((leaf, tag))
                continue
            ops.append(op)
            if tag is not None:
                if first_tap is not None:  # a second level inside the run: keep the encoder whole (not resnet's case)
                    return None
                first_tap = len(ops) - 1
        if not leaves:
            return None
    if first_tap is None or first_tap == len(ops) - 1:
        return None  # the first level is not in the run, or would have to exist whole anyway for the rest
    return BandedStem(encoder, ops, rest, first_tap, normalise)
