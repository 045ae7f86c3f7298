"""Residual UNet decoder (seed-spec 4.2): deepest features upsampled and fused with each skip level.

Block i (deep to shallow): up = Conv1x1(bilinear-upsample(x), in -> in/2); main = 2 x (Conv3x3 -> norm+act) on
concat(up, skip); out = main + residual(up), residual a Conv1x1 when widths differ. Upsampling goes to the skip's
exact size (not a fixed x2), so any input size that the encoder accepts works.

Inference (`UNetDecoder.forward_rows`, eval mode only) runs the last block, the largest by far (it works at the
shallowest level's resolution), a band of output rows at a time: every layer of a block is row-local in eval mode
(convolutions, norms with running statistics, activations), so a band of output rows needs only the same band of
its input plus a halo of one row per 3x3 convolution. A skip level may be a `RowSource` instead of a tensor:
the block then asks it for the rows of each band (the banded encoder stem recomputes them, `cdseg.models.stem`),
so that the largest encoder level never exists whole.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, cast

import torch
import torch.nn.functional as F
from torch import nn

from cdseg.errors import ConfigError
from cdseg.models.norm import norm_act


def upsample_rows(x: torch.Tensor, size: tuple[int, int], start: int, stop: int) -> torch.Tensor:
    """Rows [start, stop) of `F.interpolate(x, size, mode="bilinear", align_corners=True)`, reading only the
    input rows they need (equal to the full upsampling within float rounding: about 1e-7 relative)."""
    height, out_h = x.shape[-2], size[0]
    idx = torch.arange(start, stop, device=x.device, dtype=torch.float32)
    scale = (height - 1) / (out_h - 1) if out_h > 1 else 0.0
    real = idx * scale
    lo = real.floor().long().clamp_(0, height - 1)
    hi = (lo + 1).clamp_(max=height - 1)
    frac = (real - lo).clamp_(0.0, 1.0).to(x.dtype)[:, None]
    first, last = int(lo[0]), int(hi[-1])
    wide = F.interpolate(x[:, :, first : last + 1], size=(last + 1 - first, size[1]), mode="bilinear",
                         align_corners=True)  # width only: its height is unchanged, so its rows are exact
    lo_rows, hi_rows = wide[:, :, lo - first], wide[:, :, hi - first]
    return lo_rows.add_(hi_rows.sub_(lo_rows).mul_(frac))


class RowSource(Protocol):
    """A feature map computed on demand, a band of rows at a time."""

    @property
    def shape(self) -> torch.Size:
        """The whole feature's shape [B, C, H, W]."""
        ...

    def rows(self, start: int, stop: int) -> torch.Tensor:
        """Rows [start, stop) of the feature, [B, C, stop - start, W]."""
        ...


def skip_rows(skip: torch.Tensor | RowSource, start: int, stop: int) -> torch.Tensor:
    """Rows [start, stop) of a feature given whole or as a `RowSource`."""
    return skip[:, :, start:stop] if isinstance(skip, torch.Tensor) else skip.rows(start, stop)


class DecodeBlock(nn.Module):
    """One residual UNet block: upsample `x` to `skip`'s size, fuse, two conv-norm-act layers, residual."""

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int, norm: str, act: str) -> None:
        super().__init__()
        mid = max(in_ch // 2, 1)
        self.reduce = nn.Conv2d(in_ch, mid, kernel_size=1, bias=True)
        self.main = nn.Sequential(
            nn.Conv2d(mid + skip_ch, out_ch, kernel_size=3, padding=1, bias=False),
            norm_act(norm, out_ch, act),
            nn.Conv2d(out_ch, out_ch, kernel_size=3, padding=1, bias=False),
            norm_act(norm, out_ch, act),
        )
        self.residual: nn.Module = nn.Conv2d(mid, out_ch, kernel_size=1, bias=True) if mid != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=True)
        up = self.reduce(up)
        return self.main(torch.cat([up, skip], dim=1)) + self.residual(up)

    @property
    def halo(self) -> int:
        """Input rows each side that one output row depends on, beyond its own (one per 3x3 convolution)."""
        return sum(int(m.padding[0]) for m in self.main.modules() if isinstance(m, nn.Conv2d))

    def forward_rows(self, x: torch.Tensor, skip: torch.Tensor | RowSource, start: int, stop: int) -> torch.Tensor:
        """Rows [start, stop) of `forward(x, skip)` in eval mode, from those rows of the upsampled `x` and of
        `skip` (a tensor, or a `RowSource` asked for those rows) plus `halo` rows each side (zero padding only at
        the real top and bottom edges)."""
        height = skip.shape[-2]
        first, last = max(0, start - self.halo), min(height, stop + self.halo)
        up = self.reduce(upsample_rows(x, (height, skip.shape[-1]), first, last))
        out = self.main(torch.cat([up, skip_rows(skip, first, last)], dim=1)) + self.residual(up)
        return out[:, :, start - first : stop - first]


class UNetDecoder(nn.Module):
    """Decoder over encoder features (shallow to deep); output at the shallowest level's resolution."""

    def __init__(
        self,
        encoder_channels: Sequence[int],
        norm: str,
        act: str,
        decoder_channels: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        deep_first = list(encoder_channels)[::-1]
        if len(deep_first) < 2:
            raise ConfigError(f"the encoder gives {len(deep_first)} feature level(s); the UNet decoder needs at least 2")
        skips = deep_first[1:]
        outs = list(decoder_channels) if decoder_channels is not None else skips
        if len(outs) != len(skips):
            raise ConfigError(
                f"--model.decoder-channels={list(outs)} has {len(outs)} entries; this encoder needs {len(skips)} "
                f"(one per skip level, deepest first; default {skips})"
            )
        blocks = []
        in_ch = deep_first[0]
        for skip_ch, out_ch in zip(skips, outs, strict=True):
            blocks.append(DecodeBlock(in_ch, skip_ch, out_ch, norm, act))
            in_ch = out_ch
        self.blocks = nn.ModuleList(blocks)
        self.out_channels = in_ch

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        deep_first = list(features)[::-1]
        x = deep_first[0]
        for block, skip in zip(self.blocks, deep_first[1:], strict=True):
            x = block(x, skip)
        return x

    def forward_rows(self, stages: list[torch.Tensor | RowSource], tail: Callable[[torch.Tensor], torch.Tensor],
                     rows: int) -> torch.Tensor:
        """`tail(self(stages))` in eval mode for a per-pixel `tail` (the 1x1 heads), every block run `rows` output
        rows at a time (a deep block with fewer rows in one go, without halo), so that a block's intermediate
        activations exist for one band only and the last block's output not at all.

        `stages` (shallow to deep) is emptied: each level is released as soon as the decoder is done with it. A
        skip level may be a `RowSource` (the banded stem's first level), asked for each band's rows; the deepest
        level must be a tensor."""
        if self.training:
            raise RuntimeError("UNetDecoder.forward_rows is for eval mode (norms with running statistics)")
        deep_first = stages[::-1]
        stages.clear()
        deepest = deep_first.pop(0)
        if not isinstance(deepest, torch.Tensor):
            raise TypeError("UNetDecoder.forward_rows needs the deepest encoder level as a tensor")
        x = deepest
        del deepest
        blocks = [cast(DecodeBlock, b) for b in self.blocks]
        for i, block in enumerate(blocks):
            skip = deep_first.pop(0)
            height = skip.shape[-2]
            step = max(1, rows)
            out: torch.Tensor | None = None
            for start in range(0, height, step):
                stop = min(height, start + step)
                band = block.forward_rows(x, skip, start, stop)
                if i == len(blocks) - 1:
                    band = tail(band)
                if out is None:
                    out = band.new_empty((*band.shape[:2], height, band.shape[-1]))
                out[:, :, start:stop] = band
                del band
            del skip
            assert out is not None
            x = out
        return x
